"""health-dashboard stand-in (the real one is nginx serving the UI on port 80)."""
import sys

sys.path.insert(0, "/app/shared")
from standin import now, serve  # noqa: E402

PAGE = "<!doctype html><title>HA Ingestor Dashboard</title><h1>Overview</h1>"
serve("health-dashboard", 80, lambda: {"status": "healthy", "timestamp": now()},
      get={"/": lambda query: (200, {"page": PAGE})})
