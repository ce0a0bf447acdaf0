"""Stand-in for the user's OAuth server (Alexa account linking) in tests, stdlib only.

- GET  /health           -> {"status": "healthy", "version", "clients", "secret_sha256"}
                            (only a hash of ALEXA_CLIENT_SECRET, never the value)
- GET  /alexa/authorize  -> 302 to redirect_uri with a code (known client_id), else 400
- POST /alexa/token      -> access token when client_id/client_secret match, else 401
Binds 127.0.0.1:8096 (OAUTH_BIND / OAUTH_PORT); clients from oauth_clients.json beside it.
"""

import hashlib
import json
import os
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

HERE = Path(__file__).resolve().parent
VERSION = (HERE / "VERSION").read_text().strip() if (HERE / "VERSION").exists() else "0"
CLIENTS = json.loads((HERE / "oauth_clients.json").read_text())
SECRET = os.environ.get("ALEXA_CLIENT_SECRET", "")
CODES: dict[str, str] = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            return self.send_json(200, {
                "status": "healthy", "version": VERSION, "clients": len(CLIENTS),
                "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest() if SECRET else None,
            })
        if url.path == "/alexa/authorize":
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            client = CLIENTS.get(query.get("client_id", ""))
            if not client or not query.get("redirect_uri"):
                return self.send_json(400, {"error": "invalid_request"})
            code = secrets.token_urlsafe(16)
            CODES[code] = query["client_id"]
            target = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query.get("state", "")})
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if url.path == "/alexa/token":
            return self.send_json(405, {"error": "use POST"})
        return self.send_json(404, {"error": "not found"})

    def do_POST(self):
        if urlparse(self.path).path != "/alexa/token":
            return self.send_json(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if form.get("client_id") not in CLIENTS or not SECRET or form.get("client_secret") != SECRET:
            return self.send_json(401, {"error": "invalid_client"})
        return self.send_json(200, {"access_token": secrets.token_urlsafe(24), "token_type": "bearer",
                                    "expires_in": 3600})

    def send_json(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


if __name__ == "__main__":
    bind, port = os.environ.get("OAUTH_BIND", "127.0.0.1"), int(os.environ.get("OAUTH_PORT", "8096"))
    print(f"oauth-server-sample {VERSION} on {bind}:{port}, {len(CLIENTS)} clients", flush=True)
    ThreadingHTTPServer((bind, port), Handler).serve_forever()
