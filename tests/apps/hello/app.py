"""Sample web service for tests: behaves like a user's app where deploys touch it.

- GET /health -> {"status": "healthy", "version": ..., "secret_sha256": ..., "writes": n}
- binds $BIND:$PORT (default 127.0.0.1:8080)
- reads its version from VERSION beside this file; a version starting with "broken"
  exits at start (to test rollback); "broken-leaky" also prints its secret first, as real
  apps print a DSN with its password when a connection fails (to test log masking)
- writes a counter into $DATA_DIR at start (to prove the data dir is writable)
"""

import hashlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION = (HERE / "VERSION").read_text().strip() if (HERE / "VERSION").exists() else "0"


def bump_counter(data_dir: str) -> int:
    path = Path(data_dir) / "starts"
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            secret = os.environ.get(os.environ.get("SECRET_NAME", "APP_SECRET"), "")
            body = {
                "status": "healthy",
                "version": VERSION,
                "secret_sha256": hashlib.sha256(secret.encode()).hexdigest() if secret else None,
                "starts": self.server.starts,
            }
            self._send(200, body)
        elif self.path == "/":
            self._send(200, {"app": "hello", "version": VERSION})
        else:
            self._send(404, {"error": "not found"})

    def _send(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, fmt, *args):
        sys.stderr.write("hello: " + fmt % args + "\n")


def main():
    if VERSION.startswith("broken-leaky"):
        print(f"hello: cannot connect with secret {os.environ.get(os.environ.get('SECRET_NAME', 'APP_SECRET'), '')}",
              file=sys.stderr, flush=True)
    if VERSION.startswith("broken"):
        sys.exit(f"hello {VERSION}: refusing to start (broken build)")
    server = ThreadingHTTPServer((os.environ.get("BIND", "127.0.0.1"), int(os.environ.get("PORT", "8080"))), Handler)
    server.starts = bump_counter(os.environ.get("DATA_DIR", str(HERE)))
    print(f"hello {VERSION} listening on {server.server_address}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
