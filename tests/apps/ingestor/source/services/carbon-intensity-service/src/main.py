"""carbon-intensity stand-in (upstream: services/carbon-intensity-service at
wtthornton/ha-ingestor bbc4ab4), one of the services deploys/ingestor.py does not manage:
GET /health on SERVICE_PORT, and it needs InfluxDB by name (`influxdb` on the network)."""
import os

from shared.standin import get_json, now, serve


def health():
    try:
        influx = get_json(os.getenv("INFLUXDB_URL", "http://influxdb:8086") + "/health")[1]["status"]
    except Exception as exc:
        influx = f"unreachable: {exc}"
    return {"status": "healthy" if influx == "pass" else "degraded", "service": "carbon-intensity",
            "influxdb": influx, "timestamp": now()}


serve("carbon-intensity", int(os.getenv("SERVICE_PORT", "8010")), health)
