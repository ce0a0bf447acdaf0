"""data-retention stand-in (upstream: services/data-retention/src/main.py at
wtthornton/ha-ingestor bbc4ab4): GET /health on 8080."""
from shared.standin import now, serve

serve("data-retention", 8080, lambda: {"status": "healthy", "service": "data-retention", "timestamp": now()})
