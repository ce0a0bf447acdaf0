"""data-api stand-in: SQLite metadata (/app/data/metadata.db, WAL; tables from Alembic)
and InfluxDB status in /health, /api/devices, /api/entities, and the internal endpoint
discovery writes to."""
import os
import sys

sys.path.insert(0, "/app/shared")
from standin import get_json, now, open_db, serve  # noqa: E402

DB = open_db("/app/data/metadata.db")
INFLUX = os.environ.get("INFLUXDB_URL", "http://influxdb:8086")


def influx_status():
    try:
        return "connected" if get_json(f"{INFLUX}/health")[1].get("status") == "pass" else "error"
    except Exception:
        return "disconnected"


def health():
    try:
        DB.execute("SELECT 1").fetchone()
        sqlite = "connected"
    except Exception:
        sqlite = "error"
    databases = {"influxdb": influx_status(), "sqlite": sqlite}
    ok = all(v == "connected" for v in databases.values())
    return {"status": "healthy" if ok else "degraded", "timestamp": now(), "databases": databases}


def rows(sql, args=()):
    cur = DB.execute(sql, args)
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def devices(query):
    found = rows("SELECT * FROM devices ORDER BY device_id")
    return 200, {"devices": found, "count": len(found)}


def entities(query):
    sql, args = "SELECT * FROM entities", []
    for key in ("domain", "area_id", "device_id"):
        if key in query:
            sql += (" AND " if args else " WHERE ") + f"{key} = ?"
            args.append(query[key][0])
    found = rows(sql + " ORDER BY entity_id", args)
    return 200, {"entities": found, "count": len(found)}


def store_metadata(body):
    for d in body.get("devices", []):
        DB.execute("INSERT OR REPLACE INTO devices (device_id, name, manufacturer, model, sw_version, area_id) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (d["id"], d["name"], d.get("manufacturer"), d.get("model"), d.get("sw_version"), d.get("area_id")))
    for e in body.get("entities", []):
        DB.execute("INSERT OR REPLACE INTO entities (entity_id, device_id, domain, platform, area_id) VALUES (?, ?, ?, ?, ?)",
                   (e["entity_id"], e.get("device_id"), e["domain"], e.get("platform"), e.get("area_id")))
    DB.commit()
    return 200, {"devices": len(body.get("devices", [])), "entities": len(body.get("entities", []))}


def events(query):
    # the real service queries InfluxDB (Epic 23 fields); the stand-in has no events
    return 200, {"events": [], "count": 0}


serve("data-api", 8006, health, get={"/api/devices": devices, "/api/entities": entities, "/api/events": events},
      post={"/internal/metadata": store_metadata})
