"""facts.http's probe speaks HTTP/1.1 over a socket itself (http.client's imports were most
of its cost on a host): the framings a server may answer with, against a real local server."""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.unit.test_facts_http import run_fact, serve

BODY = json.dumps({"status": "ok", "n": 1})


class Wire(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Wire.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        route = self.path.split("?")[0]
        if route == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (BODY[:5], BODY[5:]):
                self.wfile.write(f"{len(piece):x};ext=1\r\n{piece}\r\n".encode())
            self.wfile.write(b"0\r\n\r\n")
        elif route == "/until-close":  # no length: the body ends when the server closes
            self.send_response(200)
            self.end_headers()
            self.wfile.write(BODY.encode())
        elif route == "/hang-up":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif route == "/no-content":
            self.send_response(204)
            self.end_headers()
        elif route == "/big":
            data = b"x" * (2 * 1048576)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            data = BODY.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


class KeepAlive(Wire):
    protocol_version = "HTTP/1.1"  # keeps the connection open unless the client closes it


@pytest.fixture(scope="module", params=[Wire, KeepAlive], ids=["http1.0-server", "http1.1-server"])
def base(request):
    server = ThreadingHTTPServer(("127.0.0.1", 0), request.param)
    serve(server)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/plain", "/chunked", "/until-close"])
def test_each_framing_gives_the_body(base, path):
    if path == "/until-close" and "1.1" in base:
        pytest.skip("an HTTP/1.1 server must send a length")
    result = run_fact(url=f"{base}{path}", json_field="status")
    assert (result["status"], result["ok"], result["field"], result["error"]) == (200, True, "ok", None)
    assert result["body"] == BODY


def test_the_request_is_what_http_client_sends_and_closes(base):
    Wire.seen.clear()
    result = run_fact(url=f"{base}/plain?a=1#fragment")
    port = base.rsplit(":", 1)[1]
    assert result["ok"]
    seen = Wire.seen[-1]
    assert seen["path"] == "/plain?a=1" and seen["host"] == f"127.0.0.1:{port}"
    assert seen["connection"] == "close" and seen["accept-encoding"] == "identity"
    assert seen["user-agent"] == "pyinfra-health" and seen["accept"] == "application/json, */*"


def test_a_bare_query_and_no_path_ask_for_root(base):
    Wire.seen.clear()
    run_fact(url=f"{base}?x=1")
    run_fact(url=base)
    assert [s["path"] for s in Wire.seen] == ["/?x=1", "/"]


def test_no_content_and_a_hang_up(base):
    result = run_fact(url=f"{base}/no-content")
    assert (result["status"], result["ok"], result["body"]) == (204, True, "")
    result = run_fact(url=f"{base}/hang-up")
    assert result["status"] is None and result["error"].startswith("RemoteDisconnected")


def test_a_huge_body_is_read_up_to_one_megabyte(base):
    result = run_fact(url=f"{base}/big")
    assert result["ok"] and result["body"] == "x" * 200


@pytest.mark.parametrize("url, error", [
    ("http://127.0.0.1:99999/", "out of range"),
    ("http://127.0.0.1:x/", "out of range"),
    ("http:///health", "unsupported URL"),
    ("http://127.0.0.1/a b", "control characters"),
])
def test_bad_urls_are_errors_not_requests(url, error):
    result = run_fact(url=url)
    assert result["status"] is None and error in result["error"]


def test_a_host_header_cannot_add_a_header(base):
    result = run_fact(url=f"{base}/plain", host_header="x.example\r\nX-Injected: 1")
    assert result["status"] is None and "Invalid header value" in result["error"]


def test_many_probes_at_once_in_threads(base):
    from tests.unit.test_facts_http_many import run_many

    results = run_many([{"url": f"{base}/chunked", "json_field": "n"}, {"url": f"{base}/plain", "json_field": "n"}])
    assert [(r["status"], r["field"]) for r in results] == [(200, 1), (200, 1)]
