"""`mass --config DATA_DIR [--bind 127.0.0.1] [--port 8095]`."""

import argparse
import base64
import hashlib
import json
import os
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mass_sample import VERSION

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def bump_starts(data_dir: Path) -> int:
    """Prove the data dir is writable (and keep the rest of it untouched)."""
    path = data_dir / "starts"
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def read_frame(rfile):
    """One client frame -> (opcode, payload); client frames are always masked."""
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


def write_frame(wfile, opcode: int, payload: bytes) -> None:
    header = bytes([0x80 | opcode])
    if len(payload) < 126:
        header += bytes([len(payload)])
    elif len(payload) < 65536:
        header += bytes([126]) + struct.pack(">H", len(payload))
    else:
        header += bytes([127]) + struct.pack(">Q", len(payload))
    wfile.write(header + payload)
    wfile.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        if self.path == "/ws":
            return self.websocket()
        if self.path in ("/", "/health"):
            return self.send_json(200, {"app": "music-assistant-sample", "status": "healthy",
                                        "version": VERSION, "starts": self.server.starts})
        return self.send_json(404, {"error": "not found"})

    def send_json(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            return self.send_json(400, {"error": "expected a WebSocket upgrade"})
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", ws_accept(key))
        self.end_headers()
        self.wfile.flush()
        while True:
            opcode, payload = read_frame(self.rfile)
            if opcode == 8:  # close
                write_frame(self.wfile, 8, payload[:2])
                break
            if opcode == 9:  # ping
                write_frame(self.wfile, 10, payload)
            elif opcode in (1, 2):
                write_frame(self.wfile, opcode, payload)
        self.close_connection = True


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mass")
    parser.add_argument("--config", required=True, help="data directory")
    parser.add_argument("--bind", default=os.environ.get("MASS_BIND", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MASS_PORT", "8095")))
    args = parser.parse_args(argv)
    if VERSION.startswith("broken"):
        sys.exit(f"music-assistant-sample {VERSION}: refusing to start (broken on purpose)")
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    server.starts = bump_starts(Path(args.config))
    print(f"music-assistant-sample {VERSION} on {args.bind}:{args.port}, data {args.config}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
