"""
HTTP health checks performed FROM the target host.

Why: backends listen on 127.0.0.1 (behind nginx), so the controller cannot reach them; health
gates after a deploy and preflight checks must ask from the host itself. curl is not always
installed, python3 always is, so the request is made by a small stdlib script on the host.
"""

from __future__ import annotations

import json
from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.api.exceptions import FactProcessError
from typing_extensions import override

BODY_PREVIEW = 200

# The probe, run on the host: one GET, one dict, never raising. Redirects are NOT followed
# (a 301 to a login page is not "healthy"). With host_header on https, SNI and certificate
# verification use that name, so https://127.0.0.1/ with host_header="music.example.com"
# checks nginx's vhost. HTTP/1.1 over a plain socket (ssl only for https), as http.client
# would send it plus `Connection: close`: http.client's imports (email, urllib, ssl) were
# most of the probe's cost on the host, and a no-op apply runs it on every host (issue 16).
PROBE = r"""
import json, socket, sys
class RemoteDisconnected(ConnectionResetError):
    pass
class BadStatusLine(Exception):
    pass
def split_url(url):
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError("unsupported URL: " + url)
    rest = rest.partition("#")[0]
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
    netloc, target = rest[:cut].rpartition("@")[2], rest[cut:]
    if netloc.startswith("["):
        host, _, port = netloc[1:].partition("]")
        port = port[1:] if port.startswith(":") else port
    else:
        host, _, port = netloc.partition(":")
    if not host:
        raise ValueError("unsupported URL: " + url)
    if port and not (port.isdigit() and int(port) <= 65535):
        raise ValueError("Port could not be cast to integer value or out of range: " + port)
    if any(ord(c) <= 32 or ord(c) == 127 for c in target):
        raise ValueError("URL can't contain control characters or spaces: " + repr(url))
    default = 443 if scheme == "https" else 80
    return scheme, host.lower(), int(port) if port else default, default, target if target.startswith("/") else "/" + target
def read_body(f, headers, status):
    if status in (204, 304) or 100 <= status < 200:
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks, size = [], 0
        while size < 1048576:
            line = f.readline(1024)
            if not line:
                break
            length = int(line.split(b";")[0].strip() or b"0", 16)
            if length == 0:
                break
            chunks.append(f.read(length))
            size += length
            f.readline(1024)
        return b"".join(chunks)[:1048576]
    if headers.get("content-length", "").isdigit():
        return f.read(min(int(headers["content-length"]), 1048576))
    return f.read(1048576)
def probe(url, field, timeout, ca_file, host_header):
    out = {"url": url, "status": None, "ok": False, "field": None, "json_field": field or None,
           "error": None, "body": ""}
    try:
        scheme, host, port, default, target = split_url(url)
        if "\r" in host_header or "\n" in host_header:
            raise ValueError("Invalid header value " + repr(host_header))
        authority = ("[" + host + "]" if ":" in host else host) + ("" if port == default else ":" + str(port))
        request = ("GET " + target + " HTTP/1.1\r\nHost: " + (host_header or authority) +
                   "\r\nAccept-Encoding: identity\r\nUser-Agent: pyinfra-health\r\nAccept: application/json, */*"
                   "\r\nConnection: close\r\n\r\n")
        sock = socket.create_connection((host, port), timeout=float(timeout))
        try:
            if scheme == "https":
                import ssl
                ctx = ssl.create_default_context(cafile=ca_file or None)
                sni = host_header or host
                name, colon, digits = sni.rpartition(":")
                if colon and digits.isdigit():
                    sni = name
                sock = ctx.wrap_socket(sock, server_hostname=sni.strip("[]"))
            sock.sendall(request.encode("iso-8859-1"))
            f = sock.makefile("rb")
            while True:
                line = f.readline(65537)
                if not line:
                    raise RemoteDisconnected("Remote end closed connection without response")
                parts = line.decode("iso-8859-1").split(None, 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/") or not (parts[1].isdigit() and len(parts[1]) == 3):
                    raise BadStatusLine(repr(line))
                status, headers = int(parts[1]), {}
                while True:
                    header = f.readline(65537)
                    if header in (b"\r\n", b"\n", b""):
                        break
                    key, _, value = header.decode("iso-8859-1").partition(":")
                    headers[key.strip().lower()] = value.strip()
                if status != 100:
                    break
            raw = read_body(f, headers, status)
        finally:
            sock.close()
        out["status"] = status
        out["ok"] = 200 <= status < 300
        text = raw.decode("utf-8", "replace")
        out["body"] = text[:200]
        if field:
            try:
                value = json.loads(text)
                for key in field.split("."):
                    if isinstance(value, list) and key.lstrip("-").isdigit():
                        value = value[int(key)]
                    else:
                        value = value[key]
                out["field"] = value
            except (ValueError, KeyError, IndexError, TypeError):
                pass
    except Exception as e:
        out["error"] = (type(e).__name__ + ": " + str(e)).strip().rstrip(":")
    return out
""".strip()

# python3 -c SCRIPT URL JSON_FIELD TIMEOUT CA_FILE HOST_HEADER: exactly one JSON line, exit 0.
HEALTH_SCRIPT = PROBE + "\nprint(json.dumps(probe(*sys.argv[1:6])))"

# python3 -c SCRIPT JSON: JSON is [[url, json_field, timeout, ca_file, host_header], ...];
# every probe at once (threads), one JSON line: their dicts in the same order, exit 0.
HEALTH_MANY_SCRIPT = PROBE + """
import threading
probes = json.loads(sys.argv[1])
results = [None] * len(probes)
def run(i):
    results[i] = probe(*probes[i])
threads = [threading.Thread(target=run, args=(i,)) for i in range(len(probes))]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results))"""


class HttpHealth(FactBase[dict[str, Any] | None]):
    """
    GET ``url`` from the host itself and report, never raising on network/TLS errors:

    .. code:: python

        {"url": url, "status": 200, "ok": True, "field": "ok", "json_field": "status",
         "error": None, "body": '{"status": "ok"}'}

    ``status`` is None and ``error`` set ("ConnectionRefusedError: [Errno 111] ...",
    "TimeoutError: timed out", "SSLCertVerificationError: ...") when no HTTP answer came.
    ``ok`` means 2xx; redirects are not followed. ``field`` is the value at the dot-path
    ``json_field`` in the JSON body (``"db.ok"``, ``"checks.0.status"``), None when absent or
    the body is not JSON. ``body`` is the first 200 characters. ``ca_file`` is a CA bundle
    path on the host; ``host_header`` sets the Host header (and SNI/verification name on
    https). Returns None only when python3 is missing on the host.

    Exists because backends listen on 127.0.0.1 and only the host can reach them.
    """

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "python3"

    @override
    def command(
        self,
        url: str,
        json_field: str | None = None,
        timeout: float = 5,
        ca_file: str | None = None,
        host_header: str | None = None,
    ) -> StringCommand:
        return build_command(url, json_field, timeout, ca_file, host_header)

    @staticmethod
    @override
    def default() -> dict[str, Any] | None:
        return None

    @override
    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_output(output)


class HttpHealthMany(FactBase[list[dict[str, Any]] | None]):
    """
    ``HttpHealth`` for several URLs (and JSON fields) in one command and one python3:
    ``probes`` is a list of ``{"url": ..., "json_field": ..., "timeout": ..., "ca_file": ...,
    "host_header": ...}`` (only ``url`` required); the answer is the list of their HttpHealth
    dicts, in the same order, the requests made at once. None only when python3 is missing.

    Exists because a gate that checks eight services would otherwise start eight
    interpreters on the host, one after the other.
    """

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "python3"

    @override
    def command(self, probes: list[dict[str, Any]]) -> StringCommand:
        return build_many_command(probes)

    @staticmethod
    @override
    def default() -> list[dict[str, Any]] | None:
        return None

    @override
    def process(self, output: list[str]) -> list[dict[str, Any]] | None:
        return last_json_line(output, "[", "HttpHealthMany")


def build_many_command(probes: list[dict[str, Any]]) -> StringCommand:
    rows = [[str(p["url"]), p.get("json_field") or "", str(float(p.get("timeout", 5))), p.get("ca_file") or "",
             p.get("host_header") or ""] for p in probes]
    return StringCommand("python3", "-c", QuoteString(HEALTH_MANY_SCRIPT), QuoteString(json.dumps(rows)))


def build_command(
    url: str,
    json_field: str | None = None,
    timeout: float = 5,
    ca_file: str | None = None,
    host_header: str | None = None,
) -> StringCommand:
    """``python3 -c SCRIPT ...`` with every value a separately quoted argv item."""
    return StringCommand(
        "python3",
        "-c",
        QuoteString(HEALTH_SCRIPT),
        QuoteString(str(url)),
        QuoteString(json_field or ""),
        QuoteString(str(float(timeout))),
        QuoteString(ca_file or ""),
        QuoteString(host_header or ""),
    )


def parse_output(output: list[str]) -> dict[str, Any] | None:
    """The script prints one JSON line; anything before it (warnings) is ignored."""
    return last_json_line(output, "{", "HttpHealth")


def last_json_line(output: list[str], opener: str, fact: str) -> Any:
    """The last line that starts with `opener`, parsed; no output at all: None."""
    for line in reversed(output):
        line = line.strip()
        if line.startswith(opener):
            try:
                return json.loads(line)
            except ValueError as e:
                raise FactProcessError(f"{fact}: unparsable output {line[:200]!r}") from e
    if not any(line.strip() for line in output):
        return None
    raise FactProcessError(f"{fact}: no JSON in output {output[-5:]!r}")


def is_healthy(
    result: dict[str, Any] | None,
    expect_field: str | None = None,
    expect_value: Any = None,
) -> bool:
    """True for a 2xx answer without error and, when asked, the right JSON field value.

    ``expect_field``: the dot-path that must be present (not null). It must be the path the
    fact was called with (``json_field``): a different one raises ValueError, because the fact
    only extracted that one field. ``expect_value``: the value the extracted field must equal
    (``True``, ``"ok"``, ``3``...); strings compare case-insensitively, and ``True`` does not
    equal ``1``.
    """
    if not result or result.get("error") or not result.get("ok"):
        return False
    if expect_field is not None and result.get("json_field") != expect_field:
        raise ValueError(
            f"is_healthy(expect_field={expect_field!r}) but the fact extracted "
            f"json_field={result.get('json_field')!r}: call HttpHealth with "
            f"json_field={expect_field!r}"
        )
    if expect_field is None and expect_value is None:
        return True
    value = result.get("field")
    if value is None:
        return False
    if expect_value is None:
        return True
    if isinstance(expect_value, str) and isinstance(value, str):
        return value.lower() == expect_value.lower()
    if isinstance(value, bool) != isinstance(expect_value, bool):
        return False
    return bool(value == expect_value)


def describe(result: dict[str, Any] | None) -> str:
    """One line for error messages: what was asked and what came back."""
    if not result:
        return "no HTTP result (is python3 installed on the host?)"
    url = result.get("url", "?")
    if result.get("error") or result.get("status") is None:
        return f"GET {url} failed: {result.get('error') or 'no response'}"
    line = f"GET {url} -> HTTP {result['status']}"
    if result.get("json_field"):
        line += f", {result['json_field']}={result.get('field')!r}"
    body = " ".join(str(result.get("body") or "").split())
    if body and not result.get("ok"):
        line += f": {body[:120]}"
    return line
