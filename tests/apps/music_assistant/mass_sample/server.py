"""The start sequence of music_assistant/server/server.py (2.3.0), reduced to what a deploy sees."""

import asyncio
import base64
import hashlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import struct
import uuid

from mass_sample_runtime import get_ips

from mass_sample import SCHEMA, VERSION

LOGGER = logging.getLogger("music_assistant")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
API_SCHEMA_VERSION, MIN_SCHEMA_VERSION = 26, 24
DEFAULT_SAVE_DELAY = 2
MINIMAL_FFMPEG_VERSION = 6


class Config:
    """settings.json as controllers/config.py keeps it: nested dict, `a/b/c` keys."""

    def __init__(self, storage_path: str):
        self.filename = os.path.join(storage_path, "settings.json")
        self.data: dict = {}

    def load(self) -> None:
        for filename in (self.filename, f"{self.filename}.backup"):
            try:
                with open(filename, encoding="utf-8") as fh:
                    self.data = json.load(fh)
                return
            except FileNotFoundError:
                pass
            except ValueError:
                LOGGER.exception("Error while reading persistent storage file %s", filename)

    def get(self, key: str, default=None):
        parent = self.data
        *parents, last = key.split("/")
        for sub in parents:
            if not isinstance(parent.get(sub), dict):
                return default
            parent = parent[sub]
        value = parent.get(last, default)
        return default if value is None else value

    def save(self) -> None:
        """Rename the current file to .backup, then write the whole data (as MA does)."""
        if os.path.isfile(self.filename):
            os.replace(self.filename, f"{self.filename}.backup")
        with open(self.filename, "w", encoding="utf-8") as fh:
            json.dump(self.data, fh, indent=2)


def migrate_library(storage_path: str) -> int:
    """library.db: create tables, migrate (backup first) when the schema differs."""
    path = os.path.join(storage_path, "library.db")
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT, type TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS tracks (item_id INTEGER PRIMARY KEY, name TEXT)")
        row = db.execute("SELECT value FROM settings WHERE key = 'version'").fetchone()
        prev = int(row[0]) if row else 0
        if prev not in (0, SCHEMA):
            db.commit()
            shutil.copyfile(path, path + ".backup")
            LOGGER.info("Migrating database from version %s to %s", prev, SCHEMA)
        db.execute("INSERT OR REPLACE INTO settings VALUES ('version', ?, 'str')", (str(SCHEMA),))
        db.commit()
        return prev
    finally:
        db.close()


async def check_audio_support() -> tuple[bool, str]:
    """`ffmpeg -version` (helpers/audio.py): FileNotFoundError when it is not on PATH."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out = (await proc.communicate())[0].decode()
    version = out.split("ffmpeg version ")[1].split(" ")[0].split("-")[0]
    return proc.returncode == 0 and "FFmpeg" in out, version


def select_free_port(start: int, end: int) -> int:
    for port in range(start, end):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise OSError("No free port available")


class MusicAssistant:
    def __init__(self, storage_path: str):
        self.storage_path = storage_path
        self.config = Config(storage_path)
        self.base_url = ""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # zeroconf/ifaddr enumerate the interfaces first (netlink)
        ips = await asyncio.to_thread(get_ips)
        self.config.load()
        if not self.config.get("server_id"):
            self.config.data["server_id"] = uuid.uuid4().hex
            loop.call_later(DEFAULT_SAVE_DELAY, self.config.save)
        LOGGER.info("Starting Music Assistant Server (%s) version %s - HA add-on: False - Safe mode: False",
                    self.config.get("server_id"), VERSION)
        prev = migrate_library(self.storage_path)
        LOGGER.info("library.db schema %s (was %s)", SCHEMA, prev)
        if VERSION.startswith("broken"):
            LOGGER.error("Release %s crashes after migrating the database (broken on purpose)", VERSION)
            raise SystemExit(1)
        if VERSION.startswith("hang"):
            raise RuntimeError(f"release {VERSION} never opens its ports (broken on purpose)")
        await self.setup_streams(ips)
        await self.setup_webserver()

    async def setup_streams(self, ips) -> None:
        present, version = await check_audio_support()
        major = int("".join(c for c in version.split(".")[0] if not c.isalpha()))
        if not present:
            LOGGER.error("FFmpeg binary not found on your system, playback will NOT work!.")
        elif major < MINIMAL_FFMPEG_VERSION:
            LOGGER.error("FFMpeg version is too old, you may run into playback issues.")
        LOGGER.info("Detected ffmpeg version %s", version)
        bind_ip = self.config.get("core/streams/values/bind_ip", "0.0.0.0")
        port = self.config.get("core/streams/values/bind_port") or select_free_port(8097, 9200)
        await self._serve(bind_ip, int(port), self.handle_stream)

    async def setup_webserver(self) -> None:
        bind_ip = self.config.get("core/webserver/values/bind_ip", "0.0.0.0")
        port = int(self.config.get("core/webserver/values/bind_port", 8095))
        self.base_url = self.config.get("core/webserver/values/base_url", f"http://127.0.0.1:{port}")
        await self._serve(bind_ip, port, self.handle_web)

    async def _serve(self, bind_ip: str, port: int, handler) -> None:
        host = None if bind_ip == "0.0.0.0" else bind_ip  # None: every IPv4 and IPv6 address
        LOGGER.info("Starting server on  %s:%s", bind_ip, port)
        await asyncio.start_server(handler, host=host, port=port, reuse_address=True)

    def server_info(self) -> dict:
        return {
            "server_id": self.config.get("server_id"), "server_version": VERSION,
            "schema_version": API_SCHEMA_VERSION, "min_supported_schema_version": MIN_SCHEMA_VERSION,
            "base_url": self.base_url, "homeassistant_addon": False,
            "onboard_done": bool(self.config.get("providers")),
        }

    async def handle_stream(self, reader, writer) -> None:
        await _read_request(reader)
        await _respond(writer, 404, b"Not Found", "text/plain")

    async def handle_web(self, reader, writer) -> None:
        try:
            path, headers = await _read_request(reader)
            if path == "/info":
                await _respond(writer, 200, json.dumps(self.server_info()).encode(), "application/json")
            elif path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
                await self._websocket(reader, writer, headers["sec-websocket-key"])
            elif path == "/":
                await _respond(writer, 200, b"<!doctype html><title>Music Assistant</title>", "text/html")
            else:
                await _respond(writer, 404, b"404: Not Found", "text/plain")
        except (ConnectionError, asyncio.IncompleteReadError, KeyError, ValueError):
            pass
        finally:
            writer.close()

    async def _websocket(self, reader, writer, key: str) -> None:
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        _write_frame(writer, 1, json.dumps(self.server_info()).encode())  # MA sends its info first
        while True:
            opcode, payload = await _read_frame(reader)
            if opcode == 8:
                _write_frame(writer, 8, payload[:2])
                break
            if opcode == 9:
                _write_frame(writer, 10, payload)
            elif opcode in (1, 2):
                _write_frame(writer, opcode, payload)
            await writer.drain()


async def _read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1].split("?")[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return path, headers


async def _respond(writer, status: int, body: bytes, ctype: str) -> None:
    reason = {200: "OK", 404: "Not Found"}[status]
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                 f"Connection: close\r\n\r\n".encode() + body)
    await writer.drain()


async def _read_frame(reader):
    head = await reader.readexactly(2)
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = struct.unpack(">H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack(">Q", await reader.readexactly(8))[0]
    mask = await reader.readexactly(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = await reader.readexactly(length)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _write_frame(writer, opcode: int, payload: bytes) -> None:
    size = len(payload)
    header = bytes([0x80 | opcode])
    if size < 126:
        header += bytes([size])
    elif size < 65536:
        header += bytes([126]) + struct.pack(">H", size)
    else:
        header += bytes([127]) + struct.pack(">Q", size)
    writer.write(header + payload)
