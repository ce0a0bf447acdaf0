"""sports-data stand-in: its SQLite webhook store (/app/data/webhooks.db, WAL) and /health."""
import sys

sys.path.insert(0, "/app/shared")
from standin import now, open_db, serve  # noqa: E402

DB = open_db("/app/data/webhooks.db", [
    "CREATE TABLE IF NOT EXISTS webhooks (id INTEGER PRIMARY KEY, team TEXT NOT NULL, url TEXT NOT NULL)",
])


def health():
    DB.execute("SELECT 1").fetchone()
    return {"status": "healthy", "service": "sports-data", "database": "connected", "timestamp": now()}


def add_webhook(body):
    DB.execute("INSERT INTO webhooks (team, url) VALUES (?, ?)", (body["team"], body["url"]))
    DB.commit()
    return 201, {"ok": True}


serve("sports-data", 8005, health, post={"/api/v1/webhooks": add_webhook},
      get={"/api/v1/webhooks": lambda q: (200, {"count": DB.execute("SELECT COUNT(*) FROM webhooks").fetchone()[0]})})
