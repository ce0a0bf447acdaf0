"""Sample HiveSync backend: behaves like the real FastAPI backend where the deploy touches it.

- `alembic upgrade head` runs before serving (entrypoint.sh), against PostgreSQL built from
  POSTGRES_HOST/PORT/DB/USER/PASSWORD (the plan's variables);
- GET /api/health: JSON with the database (SELECT 1 + Alembic revision) and redis (PING);
- WebSocket echo on /ws/ and /api/ws (RFC 6455 handshake, text frames);
- /internal/*: answers 200 here, so a 403 through nginx proves nginx denies it;
- POST /api/v1/workers/callback: HMAC-SHA256 over "<timestamp>.<body>" with
  WORKER_CALLBACK_SECRET (headers X-HiveSync-Timestamp, X-HiveSync-Signature), rejects a
  bad signature or a timestamp more than CALLBACK_MAX_SKEW_S (300) away; accepted callbacks
  land in audit_logs;
- SAMPLE_BROKEN=1 (the "broken image" of the rollback test): /api/health answers 500.

stdlib + SQLAlchemy/psycopg2 (Debian packages in the image); no FastAPI needed.
"""

import base64
import hashlib
import json
import os
import signal
import socket
import sys
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import create_engine, text

from callbacks import verify_callback

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BROKEN = os.environ.get("SAMPLE_BROKEN") == "1"


def database_url() -> str:
    e = os.environ
    return (f"postgresql+psycopg2://{e['POSTGRES_USER']}:{e['POSTGRES_PASSWORD']}@{e['POSTGRES_HOST']}:"
            f"{e.get('POSTGRES_PORT', '5432')}/{e['POSTGRES_DB']}")


ENGINE = create_engine(database_url(), pool_pre_ping=True)


def redis_ping() -> str:
    try:
        with socket.create_connection((os.environ["REDIS_HOST"], int(os.environ.get("REDIS_PORT", "6379"))), 2) as s:
            s.sendall(b"PING\r\n")
            return "ok" if s.recv(64).startswith(b"+PONG") else "bad answer"
    except OSError as exc:
        return f"error: {exc}"


def db_state() -> tuple[str, str | None]:
    try:
        with ENGINE.connect() as conn:
            conn.execute(text("SELECT 1"))
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return "ok", revision
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}", None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if self.headers.get("Upgrade", "").lower() == "websocket" and path in ("/ws/", "/api/ws"):
            return self.websocket()
        if path == "/api/health":
            db, revision = db_state()
            redis = redis_ping()
            ok = db == "ok" and redis == "ok" and not BROKEN
            return self.answer(200 if ok else 500, {"status": "ok" if ok else "unhealthy", "db": db,
                                                    "redis": redis, "revision": revision, "broken": BROKEN})
        if path.startswith("/internal/"):
            return self.answer(200, {"internal": True, "path": path})
        return self.answer(200 if path.startswith("/api/") else 404, {"service": "hivesync-backend", "path": path})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/api/v1/workers/callback":
            return self.answer(404, {"error": "not found"})
        problem = verify_callback(os.environ.get("WORKER_CALLBACK_SECRET", ""),
                                  self.headers.get("X-HiveSync-Timestamp", ""),
                                  self.headers.get("X-HiveSync-Signature", ""), body, time.time())
        if problem:
            return self.answer(401, {"accepted": False, "error": problem})
        with ENGINE.begin() as conn:
            conn.execute(text("INSERT INTO audit_logs (action, detail) VALUES ('worker_callback', :d)"),
                         {"d": body.decode("utf-8", "replace")})
        return self.answer(200, {"accepted": True})

    def websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                return
            self.wfile.write(bytes([0x81, len(data)]) + data)
            self.wfile.flush()

    def log_message(self, fmt, *args) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    # PID 1 in its container: without a handler SIGTERM is ignored and `docker stop` waits 10 s.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer.daemon_threads = True
    port = int(os.environ.get("PORT", "4000"))
    print(f"hivesync sample backend on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
