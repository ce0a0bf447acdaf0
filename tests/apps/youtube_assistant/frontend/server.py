"""The sample's "next start": serve dist/ on -p PORT (--dev: render src/ on the fly).

GET /api/backend calls the backend server-side (NEXT_PUBLIC_API_URL, baked into
dist/build.json by the build) and returns what it answered. SIGTERM exits cleanly,
unless a file named .ignore-sigterm exists in the working directory (a test hook for
"stop forces after the timeout").
"""

import argparse
import json
import os
import signal
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def on_sigterm(signum, frame):
    if Path(".ignore-sigterm").exists():
        print("SIGTERM ignored (.ignore-sigterm)", flush=True)
        return
    print("SIGTERM: exiting", flush=True)
    sys.exit(0)


class Handler(BaseHTTPRequestHandler):
    root: Path
    api_url: str
    dev: bool

    def log_message(self, fmt, *args):
        print(f"{self.address_string()} {fmt % args}", flush=True)

    def send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/api/backend":
            try:
                with urllib.request.urlopen(f"{self.api_url}/api/health", timeout=5) as response:
                    answer = {"api_url": self.api_url, "backend": json.loads(response.read())}
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                answer = {"api_url": self.api_url, "error": f"{type(exc).__name__}: {exc}"}
            self.send(200, json.dumps(answer).encode(), "application/json")
            return
        if self.path in ("/", "/index.html"):
            if self.dev:
                from build import render  # noqa: PLC0415

                import tempfile  # noqa: PLC0415

                with tempfile.TemporaryDirectory() as tmp:
                    render(self.api_url, Path(tmp))
                    body = (Path(tmp) / "index.html").read_bytes()
            else:
                body = (self.root / "index.html").read_bytes()
            self.send(200, body, "text/html; charset=utf-8")
            return
        self.send(404, b"not found\n", "text/plain")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("-H", "--hostname", default="0.0.0.0")
    parser.add_argument("--dev", action="store_true")
    args = parser.parse_args()
    Handler.dev = args.dev
    Handler.root = HERE / "dist"
    if args.dev:
        Handler.api_url = os.environ.get("NEXT_PUBLIC_API_URL", "http://localhost:8000")
    else:
        if not (Handler.root / "index.html").exists():
            print("server.py: no production build in dist/ (run the build first)", file=sys.stderr)
            return 1
        Handler.api_url = json.loads((Handler.root / "build.json").read_text())["api_url"]
    signal.signal(signal.SIGTERM, on_sigterm)
    server = ThreadingHTTPServer((args.hostname, args.port), Handler)
    print(f"serving {'src (dev)' if args.dev else 'dist'} on {args.hostname}:{args.port}, api {Handler.api_url}", flush=True)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
