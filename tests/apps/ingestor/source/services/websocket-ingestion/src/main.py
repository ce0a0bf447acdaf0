"""websocket-ingestion stand-in (upstream: services/websocket-ingestion/src/main.py and
health_check.py at wtthornton/ha-ingestor bbc4ab4).

As upstream: HOME_ASSISTANT_URL and HOME_ASSISTANT_TOKEN must be set (exit otherwise);
it listens on WEBSOCKET_INGESTION_PORT (default 8000); it serves only GET /health and
GET /ws (no /api/discover); discovery runs by itself once connected and stores devices
and entities in InfluxDB (not in data-api's SQLite); /health answers 200 with status
healthy/degraded/unhealthy and `connection` / `subscription` details.
"""
import json
import os
import sys
import threading
import time
import urllib.request

from shared.standin import get_json, now, serve

HA = os.getenv("HOME_ASSISTANT_URL")
TOKEN = os.getenv("HOME_ASSISTANT_TOKEN")
if os.getenv("ENABLE_HOME_ASSISTANT", "true").lower() == "true" and not (HA and TOKEN):
    sys.exit("ValueError: HOME_ASSISTANT_URL and HOME_ASSISTANT_TOKEN must be set when ENABLE_HOME_ASSISTANT=true")
INFLUX = os.getenv("INFLUXDB_URL", "http://influxdb:8086")
STATE = {"attempts": 0, "ok": 0, "failed": 0, "subscribed": False, "devices": 0, "entities": 0}


def influx_write(lines):
    bucket = os.getenv("INFLUXDB_BUCKET", "home_assistant_events")
    req = urllib.request.Request(f"{INFLUX}/api/v2/write?bucket={bucket}", data="\n".join(lines).encode(),
                                 method="POST", headers={"Authorization": f"Token {os.getenv('INFLUXDB_TOKEN')}"})
    urllib.request.urlopen(req, timeout=10).read()


def connect_loop():
    while not STATE["subscribed"]:
        STATE["attempts"] += 1
        try:
            get_json(f"{HA.rstrip('/')}/api/", {"Authorization": f"Bearer {TOKEN}"})
            _, registry = get_json(f"{HA.rstrip('/')}/api/standin/registry", {"Authorization": f"Bearer {TOKEN}"})
            influx_write([f"devices,device_id={d['id']} name={json.dumps(d['name'])}" for d in registry["devices"]])
            STATE.update(ok=STATE["ok"] + 1, subscribed=True, devices=len(registry["devices"]),
                         entities=len(registry["entities"]))
            print(f"INFO: Discovered {STATE['devices']} devices, {STATE['entities']} entities (stored in InfluxDB)",
                  flush=True)
        except Exception as exc:  # 401, refused, influx down
            STATE["failed"] += 1
            print(f"WARNING: Home Assistant connection failed: {exc}", flush=True)
            time.sleep(2)


def health():
    status = "healthy" if STATE["subscribed"] else ("degraded" if STATE["failed"] > 1 else "healthy")
    return {"status": status, "service": "websocket-ingestion", "timestamp": now(),
            "connection": {"is_running": True, "connection_attempts": STATE["attempts"],
                           "successful_connections": STATE["ok"], "failed_connections": STATE["failed"]},
            "subscription": {"is_subscribed": STATE["subscribed"], "active_subscriptions": int(STATE["subscribed"])}}


threading.Thread(target=connect_loop, daemon=True).start()
serve("websocket-ingestion", int(os.getenv("WEBSOCKET_INGESTION_PORT", "8000")), health,
      get={"/ws": lambda q: (426, {"detail": "WebSocket upgrade required"})})
