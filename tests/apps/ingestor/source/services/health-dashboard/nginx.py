#!/usr/bin/python3
"""nginx stand-in for the health-dashboard image (upstream: nginx:alpine + nginx.conf at
wtthornton/ha-ingestor bbc4ab4). Like nginx it resolves every proxy_pass host at start-up
and exits 1 ("host not found in upstream") when one does not resolve: the container names
upstream's compose sets must exist. Serves the root, `return 200` locations and proxies."""
import re
import signal
import socket
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONF = open("/etc/nginx/conf.d/default.conf").read()
LOCATIONS = re.findall(r"location\s+(\S+)\s*\{([^}]*)\}", CONF)
for host in sorted(set(re.findall(r"proxy_pass\s+http://([^:/;]+)", CONF))):
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        sys.exit(f'nginx: [emerg] host not found in upstream "{host}" in /etc/nginx/conf.d/default.conf')


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, raw, ctype="text/html"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        best = max((loc for loc in LOCATIONS if self.path.startswith(loc[0])), key=lambda l: len(l[0]), default=None)
        body = best[1] if best else ""
        if m := re.search(r'return\s+200\s+"([^"]*)"', body):
            return self._send(200, m.group(1).replace("\\n", "\n").encode(), "text/plain")
        if m := re.search(r"proxy_pass\s+(\S+);", body):
            target = m.group(1) + self.path[len(best[0]):]
            try:
                with urllib.request.urlopen(target, timeout=10) as resp:
                    return self._send(resp.status, resp.read(), resp.headers.get("Content-Type", "application/json"))
            except urllib.error.HTTPError as exc:
                return self._send(exc.code, exc.read(), "application/json")
            except OSError as exc:
                return self._send(502, f"502 Bad Gateway: {exc}".encode(), "text/plain")
        with open("/usr/share/nginx/html/index.html", "rb") as fh:
            self._send(200, fh.read())

    def log_message(self, *args):
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
ThreadingHTTPServer(("0.0.0.0", 80), Handler).serve_forever()
