"""admin-api stand-in: /health only."""
import sys

sys.path.insert(0, "/app/shared")
from standin import now, serve  # noqa: E402

serve("admin-api", 8003, lambda: {"status": "healthy", "service": "admin-api", "timestamp": now()})
