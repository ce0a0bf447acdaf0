"""data-api stand-in (upstream: services/data-api/src/main.py at wtthornton/ha-ingestor
bbc4ab4): at start-up it creates ./data and runs `init_db()` (create_all: devices and
entities appear without Alembic, and no alembic_version), then serves on DATA_API_PORT:
GET /health -> {"status", "service", "dependencies": {"influxdb": {"status": ...},
"sqlite": {...}}}, /api/devices, /api/entities, /api/v1/events."""
import os
import pathlib
import sqlite3

from shared.standin import get_json, now, serve

from .database import DATABASE_URL, check_db_health, init_db

pathlib.Path("./data").mkdir(exist_ok=True)
try:
    init_db()
    print("INFO: SQLite database initialized", flush=True)
except Exception as exc:  # upstream: logs and starts anyway
    print(f"ERROR: SQLite initialization failed: {exc}", flush=True)
INFLUX = os.getenv("INFLUXDB_URL", "http://influxdb:8086")
DB_PATH = DATABASE_URL.split(":///", 1)[1]


def influx_status():
    try:
        return "connected" if get_json(f"{INFLUX}/health")[1].get("status") == "pass" else "disconnected"
    except Exception:
        return "disconnected"


def health():
    return {"status": "healthy", "service": "data-api", "timestamp": now(),
            "dependencies": {"influxdb": {"status": influx_status(), "url": INFLUX}, "sqlite": check_db_health()},
            "authentication": {"enabled": False}}


def rows(table):
    con = sqlite3.connect(DB_PATH, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(f'SELECT * FROM "{table}"')]
    finally:
        con.close()


serve("data-api", int(os.getenv("DATA_API_PORT", "8006")), health, get={
    "/api/devices": lambda q: (200, {"devices": (d := rows("devices")), "count": len(d)}),
    "/api/entities": lambda q: (200, {"entities": (e := rows("entities")), "count": len(e)}),
    "/api/v1/events": lambda q: (200, []),
})
