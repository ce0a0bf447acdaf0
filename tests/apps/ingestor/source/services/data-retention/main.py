"""data-retention stand-in: /health only."""
import sys

sys.path.insert(0, "/app/shared")
from standin import now, serve  # noqa: E402

serve("data-retention", 8080, lambda: {"status": "healthy", "service": "data-retention", "timestamp": now()})
