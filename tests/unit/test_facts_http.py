"""facts.http: the HttpHealth command run for real against throwaway local servers (plain
HTTP on 127.0.0.1 and ::1, HTTPS with an openssl-made self-signed cert), plus the helpers."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.http import HttpHealth, build_command, describe, is_healthy, parse_output

SHELLS = [sh for sh in ("sh", "bash") if shutil.which(sh)]
HEALTH_BODY = {
    "status": "ok",
    "db": {"ok": True},
    "checks": [{"name": "disk", "status": "pass"}],
    "version": 3,
}


class Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json", headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Host", "")))
        route = self.path.split("?")[0]
        if route == "/health":
            self.send(200, json.dumps(HEALTH_BODY))
        elif route == "/down":
            self.send(503, '{"status": "down"}')
        elif route == "/redirect":
            self.send(301, "", "text/html", [("Location", "/health")])
        elif route == "/text":
            self.send(200, "x" * 150 + "\n" + "y" * 150, "text/plain")
        else:
            self.send(404, "not found\n", "text/plain")


def serve(server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def http_base():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serve(server)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.fixture(scope="module")
def http6_base():
    try:
        server = V6Server(("::1", 0), Handler)
    except OSError:
        pytest.skip("no IPv6 loopback")
    serve(server)
    yield f"http://[::1]:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
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
    return key, crt


@pytest.fixture(scope="module")
def https(cert):
    key, crt = cert
    snis: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    context.sni_callback = lambda sock, name, ctx: snis.append(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    serve(server)
    yield {"base": f"https://127.0.0.1:{server.server_address[1]}", "ca": str(crt), "snis": snis}
    server.shutdown()
    server.server_close()


def run_fact(shell="sh", **kwargs) -> dict:
    """Run the fact's command like pyinfra does (sh -c) and process its output."""
    command = HttpHealth().command(**kwargs).get_raw_value()
    result = subprocess.run(
        [shutil.which(shell), "-c", command], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr  # never a failing exit: errors are data
    return HttpHealth().process(result.stdout.splitlines())


# --- real requests ------------------------------------------------------------------------


def test_ok_with_json_field(http_base):
    result = run_fact(url=f"{http_base}/health", json_field="status")
    assert result == {
        "url": f"{http_base}/health",
        "status": 200,
        "ok": True,
        "field": "ok",
        "json_field": "status",
        "error": None,
        "body": json.dumps(HEALTH_BODY),
    }


@pytest.mark.parametrize(
    "path, value",
    [("db.ok", True), ("checks.0.status", "pass"), ("version", 3), ("db", {"ok": True}),
     ("db.missing", None), ("checks.5.status", None), ("status.deeper", None)],
)
def test_dot_path_fields(http_base, path, value):
    assert run_fact(url=f"{http_base}/health", json_field=path)["field"] == value


def test_field_of_non_json_body_is_none(http_base):
    result = run_fact(url=f"{http_base}/text", json_field="status")
    assert (result["ok"], result["field"], result["error"]) == (True, None, None)


def test_body_is_cut_to_200_chars(http_base):
    body = run_fact(url=f"{http_base}/text")["body"]
    assert body == "x" * 150 + "\n" + "y" * 49


def test_5xx_is_not_ok_but_not_an_error(http_base):
    result = run_fact(url=f"{http_base}/down", json_field="status")
    assert (result["status"], result["ok"], result["error"], result["field"]) == (
        503, False, None, "down"
    )


def test_redirect_is_reported_not_followed(http_base):
    result = run_fact(url=f"{http_base}/redirect")
    assert (result["status"], result["ok"]) == (301, False)


def test_ipv6_literal_url(http6_base):
    result = run_fact(url=f"{http6_base}/health", json_field="db.ok")
    assert (result["status"], result["field"]) == (200, True)


def test_connection_refused_is_reported():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    result = run_fact(url=f"http://127.0.0.1:{port}/health")
    assert result["status"] is None and result["ok"] is False
    assert result["error"].startswith("ConnectionRefusedError")


def test_timeout_is_reported():
    silent = socket.socket()  # accepts connections (backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    try:
        started = time.monotonic()
        result = run_fact(url=f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=0.5)
        assert time.monotonic() - started < 5
    finally:
        silent.close()
    assert result["status"] is None
    assert "timed out" in result["error"]


def test_unsupported_url_is_reported():
    result = run_fact(url="ftp://example.com/x")
    assert result["status"] is None and "unsupported URL" in result["error"]


def test_https_to_plain_http_port_is_a_tls_error(http_base):
    result = run_fact(url=http_base.replace("http://", "https://") + "/health")
    assert result["status"] is None and result["error"].startswith("SSL")


def test_self_signed_certificate_fails_verification(https):
    result = run_fact(url=f"{https['base']}/health", host_header="music.example.com")
    assert result["status"] is None
    assert "CERTIFICATE_VERIFY_FAILED" in result["error"]


def test_ca_file_but_ip_url_fails_hostname_check(https):
    result = run_fact(url=f"{https['base']}/health", ca_file=https["ca"])
    assert result["status"] is None
    assert "CERTIFICATE_VERIFY_FAILED" in result["error"] or "mismatch" in result["error"]


def test_ca_file_and_host_header_sets_sni_and_verifies(https):
    Handler.seen.clear()
    https["snis"].clear()
    result = run_fact(
        url=f"{https['base']}/health", json_field="status", ca_file=https["ca"],
        host_header="music.example.com:443",
    )
    assert (result["status"], result["ok"], result["field"]) == (200, True, "ok")
    assert https["snis"] == ["music.example.com"]  # port stripped for SNI
    assert Handler.seen == [("/health", "music.example.com:443")]


@pytest.mark.parametrize("shell", SHELLS)
def test_hostile_url_and_header_stay_single_arguments(http_base, tmp_path, shell):
    marker = tmp_path / "pwned"
    # no spaces (invalid in a URL); ${IFS} would become one if a shell ever evaluated this
    touch = f"touch${{IFS}}{marker}"
    query = f"?a=1&b=it's&c=$({touch})&d=`{touch}`;{touch}"
    Handler.seen.clear()
    result = run_fact(
        shell, url=f"{http_base}/health{query}", json_field="status",
        host_header="it's.example.com",
    )
    assert result["url"] == f"{http_base}/health{query}"
    assert result["field"] == "ok"
    assert not marker.exists()
    path, host = Handler.seen[-1]
    assert (path, host) == (f"/health{query}", "it's.example.com")


def test_command_shape():
    command = build_command("http://x/?a=1&b=2", "db.ok", 2, "/etc/ca.pem", "h.example")
    raw = command.get_raw_value()
    assert raw.startswith("python3 -c '")
    assert raw.endswith(" 'http://x/?a=1&b=2' db.ok 2.0 /etc/ca.pem h.example")
    assert build_command("http://x/").get_raw_value().endswith(" http://x/ '' 5.0 '' ''")
    assert HttpHealth().requires_command(url="http://x/") == "python3"
    assert HttpHealth.default() is None


# --- process ------------------------------------------------------------------------------


def test_process_skips_noise_before_the_json_line():
    line = '{"url": "u", "status": 200, "ok": true, "field": null, "json_field": null, ' \
           '"error": null, "body": ""}'
    assert parse_output(["Warning: something on stderr-ish stdout", line])["status"] == 200


def test_process_empty_is_none_and_garbage_raises():
    assert parse_output([]) is None
    assert parse_output(["", "  "]) is None
    with pytest.raises(FactProcessError):
        parse_output(["Traceback (most recent call last):", "SyntaxError"])
    with pytest.raises(FactProcessError):
        parse_output(['{"url": broken'])


# --- is_healthy / describe ----------------------------------------------------------------


def result(status=200, ok=True, field=None, json_field=None, error=None, body=""):
    return {"url": "http://127.0.0.1:8095/health", "status": status, "ok": ok, "field": field,
            "json_field": json_field, "error": error, "body": body}


@pytest.mark.parametrize(
    "res, kwargs, healthy",
    [
        (result(), {}, True),
        (None, {}, False),
        (result(503, False), {}, False),
        (result(None, False, error="TimeoutError: timed out"), {}, False),
        (result(field="ok", json_field="status"), {"expect_field": "status"}, True),
        (result(field=None, json_field="status"), {"expect_field": "status"}, False),
        (result(field="OK", json_field="status"), {"expect_field": "status",
                                                   "expect_value": "ok"}, True),
        (result(field="degraded", json_field="status"), {"expect_value": "ok"}, False),
        (result(field=True, json_field="db.ok"), {"expect_value": True}, True),
        (result(field=1, json_field="db.ok"), {"expect_value": True}, False),
        (result(field=False, json_field="db.ok"), {"expect_value": True}, False),
        (result(field=3, json_field="version"), {"expect_value": 3}, True),
        (result(503, False, field="ok", json_field="status"), {"expect_value": "ok"}, False),
    ],
)
def test_is_healthy(res, kwargs, healthy):
    assert is_healthy(res, **kwargs) is healthy


def test_is_healthy_rejects_a_field_the_fact_did_not_extract():
    with pytest.raises(ValueError, match="json_field='status'"):
        is_healthy(result(field="ok", json_field="status"), expect_field="db.ok")


def test_describe():
    assert describe(None) == "no HTTP result (is python3 installed on the host?)"
    assert describe(result()) == "GET http://127.0.0.1:8095/health -> HTTP 200"
    assert (
        describe(result(field="degraded", json_field="status"))
        == "GET http://127.0.0.1:8095/health -> HTTP 200, status='degraded'"
    )
    assert (
        describe(result(502, False, body="<html>\n <h1>502 Bad Gateway</h1>\n</html>"))
        == "GET http://127.0.0.1:8095/health -> HTTP 502: <html> <h1>502 Bad Gateway</h1> </html>"
    )
    assert (
        describe(result(None, False, error="ConnectionRefusedError: [Errno 111] refused"))
        == "GET http://127.0.0.1:8095/health failed: ConnectionRefusedError: [Errno 111] refused"
    )
    assert "\n" not in describe(result(500, False, body="a\nb\n" * 100))
