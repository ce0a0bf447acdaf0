"""sports-data stand-in (upstream: services/sports-data/src/main.py at wtthornton/ha-ingestor
bbc4ab4): its image holds only this directory (no shared/); PORT (default 8005); /health
says healthy, or degraded when the sports API is unreachable (always here: no internet)."""
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def broken():
    try:
        with open("/app/src/HEALTH") as fh:
            return fh.read().strip() == "broken"
    except OSError:
        return False


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/health":
            code, body = 404, {"detail": "Not Found"}
        elif broken():
            code, body = 503, {"status": "unhealthy", "service": "sports-data"}
        else:
            code, body = 200, {"status": "degraded", "service": "sports-data", "api_status": False,
                               "cache_status": True, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")}
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
ThreadingHTTPServer(("0.0.0.0", int(os.getenv("PORT", "8005"))), Handler).serve_forever()
