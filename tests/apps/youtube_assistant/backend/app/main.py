"""Sample backend: an ASGI app (uvicorn) on SQLAlchemy + Alembic, like the real FastAPI app.

Upstream (aqa-youtube-assistant bd6e13d): backend/app/main.py (FastAPI, `load_dotenv()`,
lifespan running app/migrations.py `alembic upgrade head` at startup, CORS_ORIGINS),
backend/app/database.py (DATABASE_URL), backend/alembic/env.py, backend/.env.production
(8001, HOST 0.0.0.0), backend/.python-version (3.13; `datetime.UTC` needs 3.11+).
Like upstream, startup migrates the database and fails when a migration fails.

GET /api/health (and /health): {"status": "healthy", "database", "revision", "projects",
"port", "pid", "secret_sha256"}; GET /: API info. CORS for CORS_ORIGINS.
"""

import hashlib
import json
import os
from pathlib import Path

from sqlalchemy import create_engine, inspect, text

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///./youtube_assistant.db")
engine = create_engine(DATABASE_URL)


def run_migrations() -> None:
    """app/migrations.py upstream: `alembic upgrade head` with the alembic.ini beside app/."""
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415

    command.upgrade(Config(str(Path(__file__).resolve().parent.parent / "alembic.ini")), "head")


def health() -> dict:
    with engine.connect() as con:
        tables = inspect(con).get_table_names()
        revision = con.execute(text("select version_num from alembic_version")).scalar() if "alembic_version" in tables else None
        projects = con.execute(text("select count(*) from projects")).scalar() if "projects" in tables else None
    secret = os.environ.get("YOUTUBE_API_KEY")
    return {
        "status": "healthy",
        "database": os.path.abspath(engine.url.database) if engine.url.database else None,
        "revision": revision,
        "projects": projects,
        "port": os.environ.get("PORT"),
        "pid": os.getpid(),
        "secret_sha256": hashlib.sha256(secret.encode()).hexdigest() if secret else None,
    }


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    run_migrations()
                except Exception as exc:  # noqa: BLE001 - reported to uvicorn, as upstream re-raises
                    await send({"type": "lifespan.startup.failed", "message": f"migration failed: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path in ("/health", "/api/health"):
        status, body = 200, health()
    elif path == "/":
        status, body = 200, {"message": "YouTube Assistant API", "status": "running"}
    else:
        status, body = 404, {"detail": "Not Found"}
    headers = [(b"content-type", b"application/json")]
    origin = dict(scope.get("headers") or []).get(b"origin", b"").decode()
    if origin and origin in os.environ.get("CORS_ORIGINS", "").split(","):
        headers.append((b"access-control-allow-origin", origin.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
