"""facts.tls: the TlsCertificate command run for real against a throwaway SNI-aware TLS server
with openssl-made self-signed certificates; decoding of a captured answer; the helpers.

fixtures/facts/tls_fetch_music_example_com.json is the real output of the fact's command on
Debian 12 against a server using a self-signed cert made with:
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
      -subj "/C=US/O=Example Test/CN=music.example.com" \
      -addext "subjectAltName=DNS:music.example.com,DNS:*.music.example.com,IP:127.0.0.1"
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.tls import (
    TlsCertificate,
    build_command,
    covers,
    format_name,
    name_matches,
    parse_output,
    tls_problem,
)

FIXTURES = Path(__file__).parent / "fixtures" / "facts"
SHELLS = [sh for sh in ("sh", "bash") if shutil.which(sh)]


def captured() -> list[str]:
    return (FIXTURES / "tls_fetch_music_example_com.json").read_text().splitlines()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# --- captured answer ----------------------------------------------------------------------


def test_captured_certificate_is_decoded():
    assert parse_output(captured(), now=at("2026-11-23T00:00:00")) == {
        "subject": "CN=music.example.com,O=Example Test,C=US",
        "issuer": "CN=music.example.com,O=Example Test,C=US",
        "names": ["music.example.com", "*.music.example.com", "127.0.0.1"],
        "not_after": "2036-11-20T16:43:20+00:00",
        "days_left": 3650,
    }


@pytest.mark.parametrize(
    "now, days_left",
    [
        ("2036-11-10T16:43:20", 10),
        ("2036-11-19T16:43:21", 0),  # 23:59:59 left: last day
        ("2036-11-20T16:43:21", -1),  # expired one second ago
        ("2036-12-20T16:43:20", -30),
    ],
)
def test_days_left_is_floor_of_days(now, days_left):
    assert parse_output(captured(), now=at(now))["days_left"] == days_left


def test_process_uses_the_real_clock():
    cert = TlsCertificate().process(captured())
    expected = (datetime(2036, 11, 20, 16, 43, 20, tzinfo=timezone.utc)
                - datetime.now(timezone.utc)).total_seconds() // 86400
    assert cert["days_left"] in (int(expected), int(expected) + 1)  # clock may tick between


def test_no_tls_answers_are_none():
    assert parse_output([]) is None
    assert parse_output(['{"error": "ConnectionRefusedError: [Errno 111] Connection refused"}'])\
        is None
    assert TlsCertificate.default() is None


@pytest.mark.parametrize(
    "line", ['{"der": "not base64!"}', '{"der": "AAAA"}', '{"der": '],
)
def test_undecodable_answers_raise_fact_process_error(line):
    with pytest.raises(FactProcessError):
        parse_output([line])


def test_format_name_orders_most_specific_first_and_handles_multi_valued_rdns():
    rdns = (
        (("countryName", "US"),),
        (("organizationName", "Let's Encrypt"),),
        (("commonName", "R11"), ("serialNumber", "7")),
    )
    assert format_name(rdns) == "CN=R11+serialNumber=7,O=Let's Encrypt,C=US"
    assert format_name(()) == ""


# --- the real command ---------------------------------------------------------------------


def make_cert(directory: Path, stem: str, cn: str, san: str) -> tuple[Path, Path]:
    key, crt = directory / f"{stem}.key", directory / f"{stem}.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "20", "-subj", f"/CN={cn}",
         "-addext", f"subjectAltName={san}"],
        check=True, capture_output=True,
    )
    return key, crt


class SniServer:
    """Serves the "music" cert for SNI music.example.com and the "default" one otherwise
    (like nginx's default_server), records the SNI names it saw."""

    def __init__(self, directory: Path, family=socket.AF_INET, address="127.0.0.1"):
        self.default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.default.load_cert_chain(*reversed(make_cert(
            directory, "default", "default.invalid", "DNS:default.invalid")))
        music = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        music.load_cert_chain(*reversed(make_cert(
            directory, "music", "music.example.com",
            "DNS:music.example.com,DNS:*.music.example.com,IP:127.0.0.1")))
        self.snis: list[str | None] = []

        def pick(sock, name, _ctx):
            self.snis.append(name)
            if name == "music.example.com":
                sock.context = music

        self.default.sni_callback = pick
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.default.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make the test certificates")
    srv = SniServer(tmp_path_factory.mktemp("tls"))
    yield srv
    srv.sock.close()


def run_fact(shell="sh", cwd=None, **kwargs):
    command = TlsCertificate().command(**kwargs).get_raw_value()
    result = subprocess.run(
        [shutil.which(shell), "-c", command], capture_output=True, text=True, timeout=30, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return TlsCertificate().process(result.stdout.splitlines())


def test_real_certificate_for_the_sni_name(server):
    cert = run_fact(port=server.port, server_name="music.example.com")
    assert cert["subject"] == cert["issuer"] == "CN=music.example.com"
    assert cert["names"] == ["music.example.com", "*.music.example.com", "127.0.0.1"]
    assert cert["days_left"] in (19, 20)
    assert server.snis[-1] == "music.example.com"


def test_real_default_certificate_for_another_name(server):
    cert = run_fact(port=server.port, server_name="other.example.com")
    assert cert["names"] == ["default.invalid"]
    assert tls_problem(cert, "other.example.com") == (
        "certificate CN=default.invalid does not cover other.example.com (names: default.invalid)"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_hostile_server_name_is_one_argument(server, tmp_path, shell):
    # relative marker (run in tmp_path): SNI labels must stay under 63 chars
    name = "it's.example.com;touch${IFS}pwned;$(touch${IFS}pwned)`touch${IFS}pwned`"
    cert = run_fact(shell, cwd=tmp_path, port=server.port, server_name=name)
    assert list(tmp_path.iterdir()) == []
    assert server.snis[-1] == name  # sent verbatim as SNI
    assert cert["names"] == ["default.invalid"]


def test_real_nothing_listening_is_none():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    assert run_fact(port=port, server_name="music.example.com") is None


def test_real_plain_tcp_service_is_none():
    plain = socket.socket()  # accepts, sends a non-TLS banner, closes
    plain.bind(("127.0.0.1", 0))
    plain.listen(1)

    def answer():
        conn, _ = plain.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        assert run_fact(port=plain.getsockname()[1], server_name="music.example.com") is None
    finally:
        thread.join(5)
        plain.close()


def test_real_ipv6_address(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    try:
        srv = SniServer(tmp_path, socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        cert = run_fact(port=srv.port, server_name="music.example.com", address="::1")
        assert "music.example.com" in cert["names"]
        # nothing on 127.0.0.1 for that port (the default address)
        assert run_fact(port=srv.port, server_name="music.example.com") is None
    finally:
        srv.sock.close()


def test_command_shape():
    raw = build_command(443, "music.example.com").get_raw_value()
    assert raw.startswith("python3 -c '")
    assert raw.endswith(" 127.0.0.1 443 music.example.com 10")
    assert build_command("8443", "x", "::1").get_raw_value().endswith(" ::1 8443 x 10")
    assert TlsCertificate().requires_command(port=443, server_name="x") == "python3"


# --- helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, hostname, match",
    [
        ("music.example.com", "music.example.com", True),
        ("Music.Example.com", "music.example.COM.", True),
        ("*.example.com", "music.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.music.example.com", False),
        ("music.example.com", "www.music.example.com", False),
    ],
)
def test_name_matches(pattern, hostname, match):
    assert name_matches(pattern, hostname) is match


CERT = {"subject": "CN=music.example.com", "issuer": "CN=R11,O=Let's Encrypt,C=US",
        "names": ["music.example.com", "*.cdn.example.com"],
        "not_after": "2030-01-01T00:00:00+00:00", "days_left": 40}


def test_covers():
    assert covers(CERT, "music.example.com")
    assert covers(CERT, "x.cdn.example.com")
    assert not covers(CERT, "cdn.example.com")
    assert not covers(None, "music.example.com")


def test_tls_problem():
    assert tls_problem(CERT, "music.example.com") is None
    assert tls_problem(None, "music.example.com") == (
        "no TLS certificate served for music.example.com"
    )
    assert tls_problem({**CERT, "days_left": 3}, "music.example.com") == (
        "certificate for music.example.com expires in 3 days (2030-01-01T00:00:00+00:00)"
    )
    assert tls_problem({**CERT, "days_left": 3}, "music.example.com", min_days=2) is None
    assert tls_problem({**CERT, "days_left": -1}, "music.example.com") == (
        "certificate for music.example.com expired on 2030-01-01T00:00:00+00:00"
    )
    assert tls_problem({**CERT, "names": []}, "music.example.com") == (
        "certificate CN=music.example.com does not cover music.example.com (names: none)"
    )
