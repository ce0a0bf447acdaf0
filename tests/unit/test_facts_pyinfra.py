"""The custom facts through pyinfra itself, on @local: the CLI (`pyinfra @local fact
facts.x.Y key=value` from the repo root) and the Python API (State/Inventory + get_fact),
including what pyinfra does when a command is missing or fails."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import PyinfraError

from facts.compose import ComposeServices
from facts.dns import ResolvedAddresses
from facts.sockets import ListeningSockets, is_loopback_only

REPO = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).parent / "pyinfra"


class Health(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"status": "ok", "db": {"ok": true}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def fact_blocks(text: str) -> dict[str, object]:
    """`--> Fact data for: NAME (args)` followed by pretty JSON, from pyinfra's stderr."""
    blocks = {}
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^--> Fact data for: (\S+).*\n", text, re.M):
        value, _ = decoder.raw_decode(text[match.end():])
        blocks[match.group(1)] = value["@local"]
    return blocks


@pytest.fixture(scope="module")
def tls_port(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make the test certificate")
    directory = tmp_path_factory.mktemp("tls")
    key, crt = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "30",
         "-subj", "/CN=music.example.com", "-addext", "subjectAltName=DNS:music.example.com"],
        check=True, capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_cli_runs_every_fact_by_module_path(tls_port):
    http = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}/health?a=1&b=2"
        result = subprocess.run(
            [str(PYINFRA), "@local", "fact",
             "facts.sockets.ListeningSockets",
             "facts.dns.ResolvedAddresses", "hostname=localhost",
             "facts.dns.HostAddresses",
             "facts.http.HttpHealth", f"url={url}", "json_field=db.ok",
             "facts.tls.TlsCertificate", f"port={tls_port}", "server_name=music.example.com",
             "facts.compose.ComposeCli"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )
    finally:
        http.shutdown()
        http.server_close()
        listener.close()
    assert result.returncode == 0, result.stderr
    facts = fact_blocks(result.stderr)  # pyinfra prints fact data on stderr

    sockets = facts["facts.sockets.ListeningSockets"]
    mine = [s for s in sockets if s["port"] == port]
    assert mine and mine[0]["address"] == "127.0.0.1" and mine[0]["proto"] == "tcp"
    assert is_loopback_only(sockets, port)

    assert "127.0.0.1" in facts["facts.dns.ResolvedAddresses"]
    assert isinstance(facts["facts.dns.HostAddresses"], list)
    assert "127.0.0.1" not in facts["facts.dns.HostAddresses"]

    health = facts["facts.http.HttpHealth"]
    assert (health["url"], health["status"], health["ok"]) == (url, 200, True)
    assert health["field"] is True

    cert = facts["facts.tls.TlsCertificate"]
    assert cert["names"] == ["music.example.com"]
    assert cert["days_left"] in (29, 30)

    assert facts["facts.compose.ComposeCli"] in (None, "docker compose", "docker-compose")


# --- Python API ---------------------------------------------------------------------------


@pytest.fixture
def local_host():
    inventory = Inventory((["@local"], {}))
    state = State(inventory=inventory, config=Config())
    connect_all(state)
    return state, inventory.get_host("@local")


def test_api_get_fact(local_host):
    state, host = local_host
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        sockets = host.get_fact(ListeningSockets)
    finally:
        listener.close()
    mine = [s for s in sockets if s["port"] == port]
    assert mine[0]["address"] == "127.0.0.1" and mine[0]["pid"] == os.getpid()
    assert host.get_fact(ResolvedAddresses, hostname="does-not-exist.invalid") == []
    assert not state.failed_hosts  # getent's exit 2 did not fail the host


def test_api_missing_required_command_returns_default(local_host, tmp_path, monkeypatch):
    state, host = local_host
    bin_dir = tmp_path / "bin"  # a PATH with a shell but no ss
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to(shutil.which("sh"))
    monkeypatch.setenv("PATH", str(bin_dir))
    assert host.get_fact(ListeningSockets) == []
    assert not state.failed_hosts


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_api_docker_failure_fails_the_host_unless_ignored(local_host, monkeypatch):
    state, host = local_host
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert host.get_fact(ComposeServices, project="music", _ignore_errors=True) == {}
    assert not state.failed_hosts
    with pytest.raises(PyinfraError, match="No hosts remaining"):
        host.get_fact(ComposeServices, project="music")
    assert host in state.failed_hosts
