"""InfluxDB 2.x stand-in at the points deploys/ingestor.py touches: setup mode from the
DOCKER_INFLUXDB_INIT_* environment (org, bucket, admin token; once, kept in the volume),
GET /health and /ping, GET /api/v2/buckets (the real enrichment-pipeline's connection test,
services/enrichment-pipeline/src/influxdb_wrapper.py `find_buckets()`, at bbc4ab4), POST
/api/v2/write (lines appended per bucket)."""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DATA = os.environ.get("INFLUXD_DATA", "/var/lib/influxdb2")
META = os.path.join(DATA, "meta.json")
LOCK = threading.Lock()


def setup():
    if os.path.exists(META) or os.environ.get("DOCKER_INFLUXDB_INIT_MODE") != "setup":
        return
    env = os.environ
    meta = {"org": env["DOCKER_INFLUXDB_INIT_ORG"], "token": env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"],
            "user": env.get("DOCKER_INFLUXDB_INIT_USERNAME", "admin"),
            "buckets": [{"id": os.urandom(8).hex(), "name": env["DOCKER_INFLUXDB_INIT_BUCKET"],
                         "retention": env.get("DOCKER_INFLUXDB_INIT_RETENTION", "0") or "infinite"}]}
    os.makedirs(DATA, exist_ok=True)
    with open(META, "w") as fh:
        json.dump(meta, fh)


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, body=None):
        raw = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/health":
            self._send(200, {"name": "influxdb", "message": "ready for queries and writes", "status": "pass",
                             "checks": [], "version": "v2.7-standin"})
        elif path == "/ping":
            self._send(204)
        elif path == "/api/v2/buckets":
            with open(META) as fh:
                meta = json.load(fh)
            if self.headers.get("Authorization", "") != f"Token {meta['token']}":
                return self._send(401, {"code": "unauthorized"})
            name = parse_qs(urlsplit(self.path).query).get("name", [None])[0]
            self._send(200, {"links": {"self": "/api/v2/buckets"}, "buckets": [
                {"id": b["id"], "orgID": meta.get("org_id", "0" * 16), "type": "user", "name": b["name"],
                 "retentionRules": []} for b in meta["buckets"] if name in (None, b["name"])]})
        else:
            self._send(404, {"code": "not found"})

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path != "/api/v2/write":
            return self._send(404, {"code": "not found"})
        with open(META) as fh:
            meta = json.load(fh)
        if self.headers.get("Authorization", "") != f"Token {meta['token']}":
            return self._send(401, {"code": "unauthorized"})
        bucket = parse_qs(url.query).get("bucket", [""])[0]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with LOCK, open(os.path.join(DATA, f"{bucket}.lp"), "ab") as fh:
            fh.write(body.rstrip(b"\n") + b"\n")
        self._send(204)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1: no default handler
    setup()
    ThreadingHTTPServer(("0.0.0.0", 8086), Handler).serve_forever()
