"""admin-api stand-in (upstream: services/admin-api/src/main.py at wtthornton/ha-ingestor
bbc4ab4): it listens on API_PORT, default 8000 (compose sets 8004, published as 8003)."""
import os

from shared.standin import now, serve

serve("admin-api", int(os.getenv("API_PORT", "8000")),
      lambda: {"status": "healthy", "timestamp": now(), "service": "admin-api"},
      get={"/api/v1/health": lambda q: (200, {"status": "healthy"})})
