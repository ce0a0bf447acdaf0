"""The services' shared stand-in HTTP server (upstream: shared/ at wtthornton/ha-ingestor
bbc4ab4, copied into each image as /app/shared): JSON routes, /health, a HEALTH switch."""

import json
import os
import signal
import sys
import sqlite3
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def broken() -> bool:
    """A release whose /app/HEALTH says `broken` never turns healthy."""
    try:
        with open(os.environ.get("STANDIN_HEALTH_FILE", "/app/src/HEALTH")) as fh:
            return fh.read().strip() == "broken"
    except OSError:
        return False


def get_json(url, headers=None, timeout=5):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def post_json(url, body, timeout=30):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def open_db(path, schema=()):
    """SQLite in WAL mode, as the services open it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    con = sqlite3.connect(path, timeout=10, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    for statement in schema:
        con.execute(statement)
    con.commit()
    return con


def serve(name, port, health, get=None, post=None):
    """`health()` -> dict; `get`/`post`: path -> handler(query | body) -> (code, json)."""
    get, post = get or {}, post or {}

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code, body, content_type="application/json"):
            raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path == "/health":
                body = {"status": "unhealthy", "service": name} if broken() else health()
                return self._send(503 if body.get("status") == "unhealthy" else 200, body)
            handler = get.get(url.path)
            if handler is None:
                return self._send(404, {"detail": "Not Found"})
            self._send(*handler(parse_qs(url.query)))

        def do_POST(self):
            handler = post.get(urlsplit(self.path).path)
            if handler is None:
                return self._send(404, {"detail": "Not Found"})
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(*handler(json.loads(raw) if raw.strip() else {}))

        def log_message(self, fmt, *args):
            print(f"{name}: {fmt % args}", flush=True)

    # PID 1 gets no default SIGTERM handler: without this, `docker stop` waits 10 s
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{name}: Application startup complete (port {port})", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
