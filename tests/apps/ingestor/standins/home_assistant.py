"""Home Assistant stand-in, run on the test host (python3, stdlib): GET /api/ with the
bearer token -> 200 (401 otherwise), and GET /api/standin/registry -> the device and
entity registries the websocket-ingestion stand-in discovers (HA serves them over its
WebSocket API; a REST feed is enough for the deploy's discovery step).

    HA_TOKEN=... HA_PORT=8123 python3 home_assistant.py
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = os.environ["HA_TOKEN"]
DEVICES = [
    {"id": f"dev{i}", "name": f"Device {i}", "manufacturer": "Acme", "model": f"M{i}", "sw_version": "1.0",
     "area_id": "living_room" if i % 2 else "kitchen"}
    for i in range(1, 4)
]
ENTITIES = [
    {"entity_id": f"sensor.device_{i}_{kind}", "device_id": f"dev{i}", "domain": "sensor",
     "platform": "standin", "area_id": "living_room" if i % 2 else "kitchen"}
    for i in range(1, 4) for kind in ("temperature", "humidity")
] + [{"entity_id": "light.kitchen", "device_id": "dev2", "domain": "light", "platform": "standin", "area_id": "kitchen"}]


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, body):
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        if self.headers.get("Authorization", "") != f"Bearer {TOKEN}":
            return self._send(401, {"message": "Invalid authentication"})
        if self.path == "/api/":
            self._send(200, {"message": "API running."})
        elif self.path == "/api/standin/registry":
            self._send(200, {"devices": DEVICES, "entities": ENTITIES})
        else:
            self._send(404, {"message": "Not found"})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("HA_PORT", "8123"))), Handler).serve_forever()
