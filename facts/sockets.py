"""
Listening TCP/UDP sockets on a host, from ``ss`` (iproute2).

Why: preflight checks need to know whether a port a deploy wants is already taken (and by
what), and health gates / security checks need to know that a backend listens only on
loopback (``127.0.0.1:8095``) and is not exposed on every interface.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pyinfra.api import FactBase
from typing_extensions import override

# ("nginx",pid=1234,fd=6) -- the name is non-greedy up to `",pid=` so names with spaces,
# commas or parentheses (comm can hold anything) do not break the match.
_USER_RE = re.compile(r'\("(?P<name>.*?)",pid=(?P<pid>\d+),fd=\d+\)')

# Processes that hold a listening socket on behalf of the real service (socket activation).
_SOCKET_HOLDERS = {"systemd"}


def split_address(local: str) -> tuple[str, str | None, int | None]:
    """``"[::1]%lo:53"`` -> ``("::1", "lo", 53)``; ``"*:22"`` -> ``("*", None, 22)``.

    Handles ``0.0.0.0:80``, ``[::]:80``, ``*:80``, ``127.0.0.53%lo:53``,
    ``[fe80::1]%eth0:123`` and old-style ``:::22``. The port is None when it is not numeric.
    """
    address, _, port_text = local.rpartition(":")
    interface = None
    if "%" in address:
        address, _, interface = address.partition("%")
        # older iproute2 prints the scope inside the brackets: [fe80::1%eth0]
        if address.startswith("[") and interface.endswith("]"):
            interface = interface[:-1]
            address += "]"
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    port = int(port_text) if port_text.isdigit() else None
    return address, interface or None, port


def parse_users(text: str) -> list[tuple[str, int]]:
    """``users:(("nginx",pid=1,fd=6),("nginx",pid=2,fd=6))`` -> ``[("nginx", 1), ("nginx", 2)]``."""
    return [(m.group("name"), int(m.group("pid"))) for m in _USER_RE.finditer(text)]


def _owner(users: list[tuple[str, int]]) -> tuple[str | None, int | None]:
    """The process that owns a socket: the lowest pid (the master, for nginx-style forking),
    preferring real services over systemd holding the socket for socket activation."""
    if not users:
        return None, None
    candidates = [u for u in users if u[0] not in _SOCKET_HOLDERS] or users
    name, pid = min(candidates, key=lambda user: user[1])
    return name, pid


def parse_ss_line(line: str) -> dict[str, Any] | None:
    """One line of ``ss -H -tulnp`` -> socket dict, or None for blank/unparsable lines."""
    parts = line.split(None, 6)
    if len(parts) < 6 or parts[0] not in ("tcp", "udp"):
        return None
    address, interface, port = split_address(parts[4])
    if port is None:
        return None
    users = parse_users(parts[6]) if len(parts) > 6 else []
    process, pid = _owner(users)
    return {
        "proto": parts[0],
        "address": address,
        "port": port,
        "process": process,
        "pid": pid,
        "pids": sorted(pid for _, pid in users),
        "interface": interface,
    }


def parse_ss(output: list[str]) -> list[dict[str, Any]]:
    sockets = []
    for line in output:
        parsed = parse_ss_line(line)
        if parsed is not None:
            sockets.append(parsed)
    return sockets


class ListeningSockets(FactBase[list[dict[str, Any]]]):
    """
    Listening TCP sockets and bound UDP sockets (``ss -H -tulnp``), one dict per socket:

    .. code:: python

        {"proto": "tcp", "address": "127.0.0.1", "port": 8095, "process": "python3",
         "pid": 1234, "pids": [1234], "interface": None}

    ``address`` has no brackets; ``"*"`` means every IPv4 and IPv6 address (a dual-stack
    ``::`` socket), ``"0.0.0.0"`` every IPv4 one, ``"::"`` every IPv6 one. ``interface`` is
    set for sockets bound to a device (``127.0.0.53%lo``). When several processes share the
    socket (nginx master + workers) ``pid``/``process`` name the lowest pid and ``pids`` lists
    all. ``process``/``pid`` are None when ``ss`` cannot see the owner (not root: use
    ``_sudo=True`` to see other users' processes).
    """

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "ss"

    @override
    def command(self) -> str:
        return "ss -H -tulnp"

    @staticmethod
    @override
    def default() -> list[dict[str, Any]]:
        return []

    @override
    def process(self, output: list[str]) -> list[dict[str, Any]]:
        return parse_ss(output)


def listeners_on(
    sockets: list[dict[str, Any]], port: int, proto: str | None = None
) -> list[dict[str, Any]]:
    """Sockets listening on ``port`` (optionally only ``"tcp"`` or ``"udp"``)."""
    return [
        s for s in sockets if s["port"] == int(port) and (proto is None or s["proto"] == proto)
    ]


def is_loopback_address(address: str) -> bool:
    """127.0.0.0/8, ::1 and ::ffff:127.x.y.z. Wildcards (``*``, ``0.0.0.0``, ``::``) are not."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_loopback_only(sockets: list[dict[str, Any]], port: int, proto: str | None = None) -> bool:
    """True only when something listens on ``port`` and every listener is loopback.

    False when nothing listens (nothing to vouch for) or any listener is on a wildcard or a
    public/private address.
    """
    listeners = listeners_on(sockets, port, proto)
    return bool(listeners) and all(is_loopback_address(s["address"]) for s in listeners)


def port_owner(sockets: list[dict[str, Any]], port: int, proto: str | None = None) -> str | None:
    """Process name listening on ``port`` (TCP preferred over UDP); None when nothing listens
    or the owner is not visible (not root)."""
    listeners = sorted(listeners_on(sockets, port, proto), key=lambda s: s["proto"] != "tcp")
    for listener in listeners:
        if listener["process"]:
            return listener["process"]
    return None
