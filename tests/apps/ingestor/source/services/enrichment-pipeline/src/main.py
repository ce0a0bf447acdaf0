"""enrichment-pipeline stand-in (upstream: services/enrichment-pipeline/src/main.py at
wtthornton/ha-ingestor bbc4ab4): port 8002 fixed, GET /health and /api/v1/health."""
import sys

sys.path.insert(0, "/app")
from shared.standin import now, serve  # noqa: E402

health = lambda: {"status": "healthy", "service": "enrichment-pipeline", "timestamp": now()}  # noqa: E731
serve("enrichment-pipeline", 8002, health, get={"/api/v1/health": lambda q: (200, health())})
