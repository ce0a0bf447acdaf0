"""websocket-ingestion stand-in: Home Assistant authentication in /health, and
POST /api/discover: devices + entities from Home Assistant into data-api's SQLite."""
import os
import sys

sys.path.insert(0, "/app/shared")
from standin import get_json, now, post_json, serve  # noqa: E402

HA = os.environ["HOME_ASSISTANT_URL"].rstrip("/")
AUTH = {"Authorization": f"Bearer {os.environ['HOME_ASSISTANT_TOKEN']}"}
DATA_API = os.environ.get("DATA_API_URL", "http://data-api:8006")


def authenticated():
    try:
        return get_json(f"{HA}/api/", AUTH)[0] == 200
    except Exception as exc:  # 401, refused
        print(f"websocket-ingestion: Home Assistant: {exc}", flush=True)
        return False


def health():
    ok = authenticated()
    return {"status": "healthy" if ok else "degraded", "websocket": "connected" if ok else "disconnected",
            "home_assistant": "authenticated" if ok else "unauthorized", "timestamp": now()}


def discover(_body):
    _, registry = get_json(f"{HA}/api/standin/registry", AUTH)
    code, stored = post_json(f"{DATA_API}/internal/metadata", registry)
    print(f"INFO: Discovered {len(registry['devices'])} devices", flush=True)
    print(f"INFO: Discovered {len(registry['entities'])} entities", flush=True)
    print("INFO: SQLite metadata updated", flush=True)
    return 200, {"devices": len(registry["devices"]), "entities": len(registry["entities"]), "stored": stored}


serve("websocket-ingestion", 8001, health, post={"/api/discover": discover})
