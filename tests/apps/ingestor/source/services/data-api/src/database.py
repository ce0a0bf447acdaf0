"""Stand-in of services/data-api/src/database.py (wtthornton/ha-ingestor bbc4ab4): the
engine from DATABASE_URL (default sqlite+aiosqlite:///./data/metadata.db, relative to the
working directory /app), WAL and foreign keys on every connection, and `init_db()` =
`Base.metadata.create_all` at start-up (upstream: "in production, use Alembic instead").
Stand-in difference: a synchronous engine (no aiosqlite in the stand-in base)."""
import os

from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import DeclarativeBase

DATABASE_URL = os.getenv("DATABASE_URL", "sqlite+aiosqlite:///./data/metadata.db").replace("+aiosqlite", "")
engine = create_engine(DATABASE_URL, connect_args={"timeout": int(os.getenv("SQLITE_TIMEOUT", "30")),
                                                   "check_same_thread": False})


@event.listens_for(engine, "connect")
def set_sqlite_pragma(dbapi_conn, _record):
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Base(DeclarativeBase):
    pass


def init_db():
    from . import models  # noqa: F401  (registers the tables)
    Base.metadata.create_all(engine)


def check_db_health() -> dict:
    try:
        with engine.connect() as con:
            con.execute(text("SELECT 1"))
            mode = con.execute(text("PRAGMA journal_mode")).scalar()
        return {"status": "healthy", "journal_mode": mode, "wal_enabled": mode == "wal", "connection": "ok"}
    except Exception as exc:
        return {"status": "unhealthy", "connection": str(exc)}
