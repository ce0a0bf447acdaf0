"""Sample HiveSync backend: the real one (quirky14-dev/HiveSync at c5680a2) wherever the
deploy touches it. Derived from, at that commit:

- Dockerfile: `CMD ["uvicorn", "backend.app.main:app", "--host", "0.0.0.0", "--port",
  "4000"]`, WORKDIR /app, no alembic.ini copied (there is none in the repository). The
  port comes from the command line only: PORT in the environment changes nothing. Here
  `uvicorn` is a shim (backend/uvicorn) that takes the same arguments and runs this file.
- backend/app/main.py: routes at the ROOT (no /api prefix); `GET /health` answers
  `{"ok": true, "service": "hivesync-backend", "slice": "core"}` without touching the
  database; the lifespan runs `init_db()` before serving, and a failing start exits.
- backend/app/db.py: `Base.metadata.create_all` at start-up (no Alembic, no
  alembic_version table), these 14 tables: users, teams, team_members, projects, tasks,
  comments, notifications, preview_sessions, ai_jobs, workers, audit_logs,
  session_tokens, refresh_tokens, dead_letters (6 of the plan's 11 N.7.2 tables).
- backend/app/routers.py: `POST /auth/register` (409 when the e-mail is taken, a token
  pair otherwise), `/projects`, ...; FastAPI's `/docs` and `/openapi.json`. No WebSocket
  route, no worker callback route, no /internal route (404 like any unknown path).
- backend/app/config.py: the settings it reads (POSTGRES_*, REDIS_*, JWT_SECRET,
  API_TOKEN_PEPPER, SESSION_SECRET, DEVICE_TOKEN_SECRET, WORKER_CALLBACK_SECRET,
  PREVIEW_TOKEN_SECRET, PREVIEW_DEVICE_CONTEXT_SECRET, LZ_WEBHOOK_SECRET, R2_BUCKET,
  R2_ACCESS_KEY, R2_SECRET_KEY, R2_ACCOUNT_ID, R2_ENDPOINT, R2_PUBLIC_BASE_URL, ...).
  `GET /_standin/settings` (stand-in only) tells which of its secrets are still at
  config.py's placeholder default, by name, so a test can prove the env reached it.

SAMPLE_BROKEN=1 (the rollback test's bad release): its create_all adds one more table
(`preview_priorities`) and then /health answers 500.

stdlib + SQLAlchemy/psycopg2 (Debian packages in the image); no FastAPI needed.
"""

import hashlib
import json
import os
import secrets
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import create_engine, text

BROKEN = os.environ.get("SAMPLE_BROKEN") == "1"
# config.py's secrets and their placeholder defaults.
SECRET_DEFAULTS = {
    "POSTGRES_PASSWORD": "REPLACE_ME",
    "API_TOKEN_PEPPER": "REPLACE_ME_WITH_LONG_RANDOM_STRING",
    "JWT_SECRET": "REPLACE_ME_WITH_LONG_RANDOM_STRING",
    "SESSION_SECRET": "REPLACE_ME_FOR_BROWSER_SESSIONS",
    "DEVICE_TOKEN_SECRET": "REPLACE_ME_WITH_LONG_RANDOM_STRING",
    "WORKER_CALLBACK_SECRET": "REPLACE_ME_WITH_LONG_RANDOM_STRING",
    "PREVIEW_TOKEN_SECRET": "REPLACE_ME_WITH_LONG_RANDOM_STRING",
    "PREVIEW_DEVICE_CONTEXT_SECRET": "REPLACE_ME",
    "LZ_WEBHOOK_SECRET": "REPLACE_ME",
}
R2_SETTINGS = ("R2_BUCKET", "R2_ACCESS_KEY", "R2_SECRET_KEY", "R2_ACCOUNT_ID", "R2_ENDPOINT", "R2_PUBLIC_BASE_URL")
_ID = "id UUID PRIMARY KEY"
TABLES = {
    "users": f"{_ID}, email VARCHAR(320) UNIQUE NOT NULL, username VARCHAR(64) UNIQUE, password_hash VARCHAR(255), "
             "created_at TIMESTAMPTZ, tier VARCHAR(16)",
    "teams": f"{_ID}, name VARCHAR(120) UNIQUE, created_at TIMESTAMPTZ",
    "team_members": f"{_ID}, team_id UUID REFERENCES teams(id) ON DELETE CASCADE, "
                    "user_id UUID REFERENCES users(id) ON DELETE CASCADE, role VARCHAR(16)",
    "projects": f"{_ID}, team_id UUID REFERENCES teams(id) ON DELETE CASCADE, name VARCHAR(160), description TEXT",
    "tasks": f"{_ID}, project_id UUID REFERENCES projects(id) ON DELETE CASCADE, title VARCHAR(200)",
    "comments": f"{_ID}, task_id UUID REFERENCES tasks(id) ON DELETE CASCADE, body TEXT",
    "notifications": f"{_ID}, user_id UUID REFERENCES users(id) ON DELETE CASCADE, type VARCHAR(64), data JSON",
    "preview_sessions": f"{_ID}, preview_id VARCHAR(128) UNIQUE, status VARCHAR(16)",
    "ai_jobs": f"{_ID}, job_type VARCHAR(64), status VARCHAR(16), params JSON",
    "workers": f"{_ID}, worker_id VARCHAR(128) UNIQUE, kind VARCHAR(64), last_heartbeat_at TIMESTAMPTZ",
    "audit_logs": f"{_ID}, event_type VARCHAR(80), metadata_ JSON, created_at TIMESTAMPTZ",
    "session_tokens": "token VARCHAR(64) PRIMARY KEY, user_id UUID REFERENCES users(id) ON DELETE CASCADE",
    "refresh_tokens": f"{_ID}, user_id UUID REFERENCES users(id) ON DELETE CASCADE, token_hash VARCHAR(255) UNIQUE",
    "dead_letters": f"{_ID}, task_name VARCHAR(200), queue VARCHAR(120), error_message TEXT",
}
if BROKEN:
    TABLES["preview_priorities"] = f"{_ID}, preview_id VARCHAR(128), priority INTEGER"


def database_url() -> str:
    """config.py's database_url (postgresql+asyncpg there; psycopg2 here)."""
    e = os.environ.get
    return (f"postgresql+psycopg2://{e('POSTGRES_USER', 'hivesync')}:{e('POSTGRES_PASSWORD', 'REPLACE_ME')}"
            f"@{e('POSTGRES_HOST', 'postgres')}:{e('POSTGRES_PORT', '5432')}/{e('POSTGRES_DB', 'hivesync')}")


ENGINE = create_engine(database_url(), pool_pre_ping=True)


def init_db() -> None:
    """db.py's init_db: create_all (CREATE TABLE for the missing ones only)."""
    with ENGINE.begin() as conn:
        for name, columns in TABLES.items():
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS {name} ({columns})"))


def _pepper_hash(password: str) -> str:
    pepper = os.environ.get("API_TOKEN_PEPPER", SECRET_DEFAULTS["API_TOKEN_PEPPER"])
    return hashlib.sha256((pepper + password).encode()).hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status: int, body, content_type: str = "application/json") -> None:
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/health":
            if BROKEN:
                return self.answer(500, {"detail": "Internal Server Error"})
            return self.answer(200, {"ok": True, "service": "hivesync-backend", "slice": "core"})
        if path == "/docs":
            return self.answer(200, "<html><title>HiveSync Backend (core) - Swagger UI</title></html>", "text/html")
        if path == "/openapi.json":
            return self.answer(200, {"openapi": "3.1.0", "info": {"title": "HiveSync Backend (core)"}})
        if path == "/_standin/settings":
            env = os.environ
            return self.answer(200, {
                "placeholder_secrets": sorted(k for k, v in SECRET_DEFAULTS.items() if env.get(k, v) == v),
                "r2": {k: bool(env.get(k)) for k in R2_SETTINGS},
            })
        return self.answer(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0] != "/auth/register":
            return self.answer(404 if self.path.split("?")[0] != "/health" else 405, {"detail": "Not Found"})
        try:
            data = json.loads(body or b"{}")
            email, password = str(data["email"]), str(data["password"])
        except (ValueError, KeyError):
            return self.answer(422, {"detail": "email and password are required"})
        if "@" not in email or len(password) < 8:
            return self.answer(422, {"detail": "invalid email or password too short"})
        with ENGINE.begin() as conn:
            if conn.execute(text("SELECT 1 FROM users WHERE email = :e"), {"e": email}).first():
                return self.answer(409, {"detail": "Email already registered"})
            conn.execute(text("INSERT INTO users (id, email, password_hash, tier, created_at) "
                              "VALUES (gen_random_uuid(), :e, :h, 'Free', now())"),
                         {"e": email, "h": _pepper_hash(password)})
        return self.answer(200, {"access_token": secrets.token_urlsafe(24), "token_type": "bearer",
                                 "expires_in_seconds": 900, "refresh_token": secrets.token_urlsafe(24)})

    def log_message(self, fmt, *args) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


def serve(host: str, port: int) -> None:
    # PID 1 in its container: without a handler SIGTERM is ignored and `docker stop` waits 10 s.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        init_db()
    except Exception as exc:  # noqa: BLE001 - uvicorn: "Application startup failed. Exiting."
        print(f"ERROR: Application startup failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)
    ThreadingHTTPServer.daemon_threads = True
    print(f"INFO: Uvicorn running on http://{host}:{port}", flush=True)
    ThreadingHTTPServer((host, port), Handler).serve_forever()
