"""Stand-in for every Archon/Supabase HTTP service (kong, rest, studio, meta, archon-*).

As archon-server / archon-mcp / archon-agents (STANDIN_NAME ending in one of those) it
first applies upstream's start-up configuration checks, from coleam00/Archon branch
archive/v1-task-management-rag @ ecaece4, python/src/server/config/config.py
(load_environment_config, validate_supabase_url, validate_supabase_key): SUPABASE_URL and
SUPABASE_SERVICE_KEY required; plain http only for localhost, 127.0.0.1,
host.docker.internal, *.localhost or a private/loopback/link-local IP literal; a JWT
service key with role anon or any role but service_role is refused. Like the real
service it then exits (status 1) with the ConfigurationError message.

One process listens on all the plan's container ports, so one image serves every
service; it answers every path with 200 JSON (the plan's health paths included) and
echoes WebSocket frames on /socket.io/ (nginx's WebSocket proxying is tested through it).

As kong (STANDIN_NAME ending in "kong") with a declarative config at /home/kong/kong.yml
(written by the compose entrypoint, as in Supabase's docker/docker-compose.yml) that has
`basicauth_credentials`, it does what Supabase's kong.yml makes Kong do for Studio: paths
outside /rest/v1/ and /pg/ need HTTP basic auth (401 + WWW-Authenticate otherwise, like
Kong's basic-auth plugin) and are then proxied to http://studio:3000. `kong health` (the
healthcheck) asks the node itself, not a route: /__standin/health.

As archon-ui (STANDIN_NAME ending in "archon-ui") on its port (ARCHON_UI_PORT, 3737) it
applies the Vite dev server's host check, as upstream's UI runs it (archon-ui-main @ ecaece4:
`npm run dev` with vite 5.4.19; vite.config.ts server.allowedHosts = localhost, 127.0.0.1,
::1, HOST unless it is "localhost", and the comma-separated VITE_ALLOWED_HOSTS; server.host
'0.0.0.0'). vite's isHostAllowedWithoutCache (dist/node/chunks/dep-*.js): IPv4 and bracketed
IPv6 literals, localhost and *.localhost always pass, then server.host, then allowedHosts
(a leading "." allows the name and its subdomains); any other Host header gets 403 with
vite's text/plain "Blocked request" message. So only the deploy's HOST/VITE_ALLOWED_HOSTS
let the UI answer through nginx, which forwards the site's name as Host.

With STANDIN_API_KEY set it models the plan's API-key authentication (the operator's fork,
not upstream v1): every /api/ path but /api/health needs `Authorization: Bearer <key>`
(401 otherwise).

Environment:
    STANDIN_PORTS   comma-separated ports (default: the plan's container ports)
    STANDIN_HEALTH  "fail": answer 500 everywhere, so healthchecks never pass (tests of
                    the migration's rollback)
    STANDIN_NAME    name reported in answers (default: the hostname = container name)
"""

import base64
import hashlib
import ipaddress
import json
import os
import re
import signal
import urllib.error
import urllib.request
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

DEFAULT_PORTS = "3000,3001,3737,8000,8051,8052,8080,8181"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FAIL = os.environ.get("STANDIN_HEALTH", "") == "fail"
API_KEY = os.environ.get("STANDIN_API_KEY", "")
KONG_CONFIG = "/home/kong/kong.yml"
NAME = os.environ.get("STANDIN_NAME") or socket.gethostname()
KONG_LOGIN = None
UI_PORT = int(os.environ.get("ARCHON_UI_PORT") or 3737)
UI_ALLOWED = None  # archon-ui: vite_allowed_hosts(), set in main()


ARCHON_SERVICES = ("archon-server", "archon-mcp", "archon-agents")


class ConfigurationError(Exception):
    pass


def validate_supabase_url(url):
    """config.py validate_supabase_url (ecaece4)."""
    if not url:
        raise ConfigurationError("Supabase URL cannot be empty")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise ConfigurationError("Supabase URL must use HTTP or HTTPS")
    if parsed.scheme == "http":
        hostname = parsed.hostname or ""
        if hostname in ("localhost", "127.0.0.1", "host.docker.internal") or hostname.endswith(".localhost"):
            return True
        try:
            ip = ipaddress.ip_address(hostname)
            if (ip.is_private or ip.is_loopback or ip.is_link_local) and not ip.is_unspecified:
                return True
        except ValueError:
            pass
        raise ConfigurationError(f"Supabase URL must use HTTPS for non-local environments (hostname: {hostname})")
    if not parsed.netloc:
        raise ConfigurationError("Invalid Supabase URL format")
    return True


def supabase_key_role(key):
    """The JWT's role claim, unverified (config.py validate_supabase_key); None: not a JWT."""
    try:
        payload = key.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("role")
    except Exception:  # noqa: BLE001 - upstream lets undecodable keys through
        return None


def check_archon_config(env):
    """config.py load_environment_config (ecaece4), the parts that stop the service."""
    url = env.get("SUPABASE_URL")
    if not url:
        raise ConfigurationError("SUPABASE_URL environment variable is required")
    key = env.get("SUPABASE_SERVICE_KEY")
    if not key:
        raise ConfigurationError("SUPABASE_SERVICE_KEY environment variable is required")
    openai = env.get("OPENAI_API_KEY")
    if openai and not openai.startswith("sk-"):
        raise ConfigurationError("OpenAI API key must start with 'sk-'")
    validate_supabase_url(url)
    role = supabase_key_role(key)
    if role == "anon":
        raise ConfigurationError("CRITICAL: You are using a Supabase ANON key instead of a SERVICE key.")
    if role is not None and role != "service_role":
        raise ConfigurationError(f"CRITICAL: Unknown Supabase key role '{role}'.")


def vite_allowed_hosts(env):
    """archon-ui-main/vite.config.ts (ecaece4) server.allowedHosts."""
    custom = [h.strip() for h in env.get("VITE_ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = env.get("HOST")
    return list(dict.fromkeys(["localhost", "127.0.0.1", "::1", *([host] if host and host != "localhost" else []), *custom]))


def vite_host_allowed(allowed, host_header, additional=("0.0.0.0",)):
    """vite 5.4.19 isHostAllowedWithoutCache; `additional`: server.host (vite.config.ts)."""
    if re.match(r"^(?:file|.+-extension):", host_header, re.I):
        return True
    host = host_header.strip()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return False
        try:
            return ipaddress.ip_address(host[1:end]).version == 6
        except ValueError:
            return False
    hostname = host.split(":", 1)[0]
    try:
        if ipaddress.ip_address(hostname).version == 4:
            return True
    except ValueError:
        pass
    if hostname == "localhost" or hostname.endswith(".localhost") or hostname in additional:
        return True
    return any(a == hostname or (a.startswith(".") and (a[1:] == hostname or hostname.endswith(a))) for a in allowed)


def kong_basic_auth():
    """(username, password) of Studio's login in Kong's config, or None."""
    if not NAME.endswith("kong") or not os.path.exists(KONG_CONFIG):
        return None
    with open(KONG_CONFIG) as f:
        text = f.read()
    match = re.search(r"basicauth_credentials:.*?username: '([^']*)'\s*password: '([^']*)'", text, re.S)
    return (match.group(1), match.group(2)) if match else None


def read_frame(rfile):
    head = rfile.read(2)
    if len(head) < 2:
        return 8, b""
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = struct.unpack(">H", rfile.read(2))[0]
    elif length == 127:
        length = struct.unpack(">Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = rfile.read(length)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def write_frame(wfile, opcode, payload):
    wfile.write(bytes([0x80 | opcode, len(payload)]) + payload)
    wfile.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()

    def answer(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def vite_blocked(self, host):
        hostname = json.dumps(re.sub(r":\d+$", "", host)) if host else "undefined"
        raw = (f"Blocked request. This host ({hostname}) is not allowed.\n"
               f"To allow this host, add {hostname} to `server.allowedHosts` in vite.config.js.").encode()
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def kong_dashboard(self, login):
        """Kong's catch-all dashboard route: basic-auth, then Studio."""
        given = self.headers.get("Authorization", "")
        wanted = "Basic " + base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        if given != wanted:
            raw = b'{"message":"Unauthorized"}'
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="kong"')
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return
        try:
            with urllib.request.urlopen("http://studio:3000" + self.path, timeout=10) as upstream:
                status, body = upstream.status, upstream.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except OSError as exc:
            status, body = 502, json.dumps({"message": f"An invalid response was received from the upstream server: {exc}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if FAIL:
            return self.answer(500, {"status": "unhealthy", "service": NAME})
        if API_KEY and self.path.startswith("/api/") and not self.path.startswith("/api/health"):
            if self.headers.get("Authorization", "") != f"Bearer {API_KEY}":
                return self.answer(401, {"detail": "Invalid or missing API key"})
        if UI_ALLOWED is not None and self.server.server_address[1] == UI_PORT:
            host = self.headers.get("Host", "")
            if not host or not vite_host_allowed(UI_ALLOWED, host):
                return self.vite_blocked(host)
        login = KONG_LOGIN if self.server.server_address[1] == 8000 else None
        if login and self.path != "/__standin/health" and not self.path.startswith(("/rest/v1/", "/pg/")):
            return self.kong_dashboard(login)
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        port = self.server.server_address[1]
        return self.answer(200, {"status": "healthy", "service": NAME, "port": port, "path": self.path})

    do_HEAD = do_GET
    do_POST = do_GET

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            opcode, payload = read_frame(self.rfile)
            if opcode == 8:
                break
            if opcode in (1, 2):
                write_frame(self.wfile, opcode, payload)
        self.close_connection = True


def main():
    # PID 1 in a container gets no default signal handlers: stop promptly on `docker stop`
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if NAME.endswith(ARCHON_SERVICES):
        try:
            check_archon_config(os.environ)
        except ConfigurationError as exc:
            print(f"src.server.config.config.ConfigurationError: {exc}", file=sys.stderr, flush=True)
            sys.exit(1)
    global KONG_LOGIN, UI_ALLOWED
    KONG_LOGIN = kong_basic_auth()
    if NAME.endswith("archon-ui"):
        UI_ALLOWED = vite_allowed_hosts(os.environ)
    ports = [int(p) for p in os.environ.get("STANDIN_PORTS", DEFAULT_PORTS).split(",") if p.strip()]
    servers = []
    for port in ports:
        server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        server.daemon_threads = True
        servers.append(server)
    print(f"standin {NAME} on ports {ports}{' (failing health on purpose)' if FAIL else ''}", flush=True)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
