"""
The TLS certificate a host serves on a port for an SNI name.

Why: after a deploy or a certificate renewal, health gates check that nginx actually serves
the new certificate for the right name (not the snakeoil/default vhost one) and that it is not
about to expire. Asked from the host (127.0.0.1 by default) so it works before DNS points there.

Hosts may have no openssl binary, python3 is always there: the host runs a stdlib script that
fetches the certificate (verification off: we want to see whatever is served) and prints it
base64-encoded; the controller decodes it with CPython's ``ssl._ssl._test_decode_cert`` (the
private but long-stable helper behind the ssl test suite) so no host-side temp files are needed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import ssl
import tempfile
from datetime import datetime, timezone
from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.api.exceptions import FactProcessError
from typing_extensions import override

CONNECT_TIMEOUT = 10

# Runs on the host: python3 -c SCRIPT ADDRESS PORT SERVER_NAME TIMEOUT
# Prints one JSON line: {"der": base64} or {"error": "..."}; always exits 0.
FETCH_SCRIPT = r"""
import base64, json, socket, ssl, sys
address, port, server_name, timeout = sys.argv[1:5]
try:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, int(port)), timeout=float(timeout)) as sock:
        with ctx.wrap_socket(sock, server_hostname=server_name or None) as tls:
            der = tls.getpeercert(binary_form=True)
    out = {"der": base64.b64encode(der).decode()} if der else {"error": "no certificate"}
except Exception as e:
    out = {"error": (type(e).__name__ + ": " + str(e)).strip().rstrip(":")}
print(json.dumps(out))
""".strip()

# Short names as in openssl / RFC 4514.
_ATTRIBUTE_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def format_name(rdns: Any) -> str:
    """``((("commonName", "x"),), (("organizationName", "y"),))`` -> ``"CN=x,O=y"``.

    Most specific first (RFC 4514 order), i.e. the reverse of the DER order.
    """
    parts = []
    for rdn in reversed(rdns or ()):
        parts.append("+".join(f"{_ATTRIBUTE_NAMES.get(k, k)}={v}" for k, v in rdn))
    return ",".join(parts)


def decode_der(der: bytes) -> dict[str, Any]:
    """Decode a DER certificate with CPython's ssl module: the same dict shape as
    ``SSLSocket.getpeercert()`` (subject, issuer, notAfter, subjectAltName...)."""
    pem = ssl.DER_cert_to_PEM_cert(der)
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(pem)
        return ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    finally:
        os.unlink(path)


def certificate_info(decoded: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Fact shape from a decoded certificate. ``days_left`` is whole days (floor) from
    ``now`` (the controller's clock): 0 on the last day, negative once expired."""
    now = now or datetime.now(timezone.utc)
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(decoded["notAfter"]), timezone.utc)
    names = [
        value for kind, value in decoded.get("subjectAltName", ()) if kind in ("DNS", "IP Address")
    ]
    return {
        "subject": format_name(decoded.get("subject")),
        "issuer": format_name(decoded.get("issuer")),
        "names": names,
        "not_after": not_after.isoformat(),
        "days_left": int((not_after - now).total_seconds() // 86400),
    }


def parse_output(output: list[str], now: datetime | None = None) -> dict[str, Any] | None:
    """Host script output -> certificate dict, or None when nothing/no TLS answered."""
    lines = [line.strip() for line in output if line.strip().startswith("{")]
    if not lines:
        return None
    try:
        data = json.loads(lines[-1])
        if "der" not in data:
            return None
        der = base64.b64decode(data["der"], validate=True)
        return certificate_info(decode_der(der), now=now)
    except (ValueError, binascii.Error, ssl.SSLError, KeyError) as e:
        raise FactProcessError(f"TlsCertificate: cannot decode {lines[-1][:120]!r}: {e}") from e


def build_command(port: int, server_name: str, address: str = "127.0.0.1") -> StringCommand:
    return StringCommand(
        "python3",
        "-c",
        QuoteString(FETCH_SCRIPT),
        QuoteString(str(address)),
        QuoteString(str(int(port))),
        QuoteString(server_name or ""),
        QuoteString(str(CONNECT_TIMEOUT)),
    )


class TlsCertificate(FactBase[dict[str, Any] | None]):
    """
    Certificate served on ``address:port`` for SNI ``server_name``:

    .. code:: python

        {"subject": "CN=music.example.com", "issuer": "CN=R11,O=Let's Encrypt,C=US",
         "names": ["music.example.com"], "not_after": "2025-03-01T12:00:00+00:00",
         "days_left": 41}

    None when nothing answers, the port does not speak TLS, or python3 is missing.
    ``names`` holds the DNS (and IP) subjectAltNames. The certificate is not verified: use
    ``covers``/``tls_problem`` to judge it.
    """

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "python3"

    @override
    def command(self, port: int, server_name: str, address: str = "127.0.0.1") -> StringCommand:
        return build_command(port, server_name, address)

    @staticmethod
    @override
    def default() -> dict[str, Any] | None:
        return None

    @override
    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_output(output)


def name_matches(pattern: str, hostname: str) -> bool:
    """RFC 6125 matching of one SAN entry: exact, or ``*.example.com`` for one left label."""
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == hostname


def covers(cert: dict[str, Any] | None, server_name: str) -> bool:
    """True when the certificate's SANs include ``server_name`` (wildcards allowed)."""
    return bool(cert) and any(name_matches(n, server_name) for n in cert.get("names", []))


def tls_problem(cert: dict[str, Any] | None, server_name: str, min_days: int = 14) -> str | None:
    """One-line reason the served certificate is not acceptable for ``server_name``, or None."""
    if not cert:
        return f"no TLS certificate served for {server_name}"
    if not covers(cert, server_name):
        names = ", ".join(cert.get("names") or []) or "none"
        return f"certificate {cert['subject']} does not cover {server_name} (names: {names})"
    if cert["days_left"] < 0:
        return f"certificate for {server_name} expired on {cert['not_after']}"
    if cert["days_left"] < min_days:
        return (
            f"certificate for {server_name} expires in {cert['days_left']} days "
            f"({cert['not_after']})"
        )
    return None
