"""enrichment-pipeline stand-in: /health only."""
import sys

sys.path.insert(0, "/app/shared")
from standin import now, serve  # noqa: E402

serve("enrichment-pipeline", 8002, lambda: {"status": "healthy", "service": "enrichment-pipeline", "timestamp": now()})
