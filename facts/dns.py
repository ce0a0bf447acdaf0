"""
DNS facts: what a host's own resolver says about a name, and which addresses the host has.

Why: preflight checks (before requesting a certificate, before switching traffic) need to
know whether a public name really points at the host being deployed. Asking from the host
itself (``getent``) uses its ``/etc/hosts``, ``nsswitch.conf`` and resolver, which is what
the services on it will see.
"""

from __future__ import annotations

import ipaddress
import json

from pyinfra.api import FactBase, QuoteString, StringCommand
from typing_extensions import override


def parse_getent_ahosts(output: list[str]) -> list[str]:
    """Addresses from ``getent ahosts`` output, deduplicated, in resolver order.

    Each address appears three times (STREAM, DGRAM, RAW); the first column is the address.
    """
    seen: list[str] = []
    for line in output:
        parts = line.split()
        if not parts:
            continue
        try:
            address = str(ipaddress.ip_address(parts[0]))
        except ValueError:
            continue
        if address not in seen:
            seen.append(address)
    return seen


def parse_ip_addr_json(text: str) -> list[str]:
    """Global-scope IPv4/IPv6 addresses from ``ip -j addr`` (loopback and link-local dropped)."""
    addresses: list[str] = []
    for interface in json.loads(text):
        for info in interface.get("addr_info", []):
            if info.get("family") not in ("inet", "inet6"):
                continue
            if info.get("scope") != "global" or info.get("tentative") or info.get("dadfailed"):
                continue
            address = info.get("local")
            if address and address not in addresses:
                addresses.append(address)
    return addresses


def parse_hostname_i(text: str) -> list[str]:
    """Addresses from ``hostname -I`` (already without loopback and IPv6 link-local)."""
    addresses: list[str] = []
    for word in text.split():
        try:
            ip = ipaddress.ip_address(word)
        except ValueError:
            continue
        if ip.is_loopback or ip.is_link_local:
            continue
        if str(ip) not in addresses:
            addresses.append(str(ip))
    return addresses


class ResolvedAddresses(FactBase[list[str]]):
    """
    Addresses the host's own resolver returns for ``hostname`` (``getent ahosts``): IPv4 and
    IPv6, deduplicated, in the resolver's order. Empty list when the name does not resolve.

    Exists so preflight checks can tell "DNS for this site does not point here yet" before a
    deploy requests certificates or moves traffic. Note ``getent`` cannot tell NXDOMAIN from
    a resolver timeout: both give an empty list.

    .. code:: python

        host.get_fact(ResolvedAddresses, hostname="music.example.com")
    """

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "getent"

    @override
    def command(self, hostname: str) -> StringCommand:
        # getent exits 2 when the name does not resolve: that is an answer, not an error.
        return StringCommand("getent", "ahosts", "--", QuoteString(hostname), "||", "true")

    @staticmethod
    @override
    def default() -> list[str]:
        return []

    @override
    def process(self, output: list[str]) -> list[str]:
        return parse_getent_ahosts(output)


class HostAddresses(FactBase[list[str]]):
    """
    The host's global (non-loopback, non-link-local) IPv4 and IPv6 addresses.

    Exists to compare against DNS (see ``points_here``). Uses ``ip -j addr`` (iproute2) and
    falls back to ``hostname -I`` when ``ip`` is missing. Hosts behind NAT only see their
    private address here: pass the public one as ``expected`` to the helpers instead.
    """

    @override
    def command(self) -> str:
        return (
            "if command -v ip >/dev/null 2>&1; then ip -j addr show; "
            "else hostname -I; fi"
        )

    @staticmethod
    @override
    def default() -> list[str]:
        return []

    @override
    def process(self, output: list[str]) -> list[str]:
        text = "\n".join(output).strip()
        if text.startswith("["):
            return parse_ip_addr_json(text)
        return parse_hostname_i(text)


def _normalise(addresses: list[str]) -> set[str]:
    result = set()
    for address in addresses:
        try:
            result.add(str(ipaddress.ip_address(address.strip())))
        except ValueError:
            result.add(address.strip())
    return result


def points_here(
    resolved: list[str],
    host_addrs: list[str],
    expected: list[str] | None = None,
) -> bool:
    """True when the name resolves and EVERY resolved address belongs to this host.

    ``expected`` (when non-empty) replaces ``host_addrs``: for hosts behind NAT whose public
    address is not configured on any interface. One stray record is a failure, because
    clients (and ACME validators) may pick any of them.
    """
    targets = _normalise(expected if expected else host_addrs)
    got = _normalise(resolved)
    return bool(got) and got <= targets


def dns_problem(
    hostname: str,
    resolved: list[str],
    host_addrs: list[str],
    expected: list[str] | None = None,
) -> str | None:
    """One-line explanation of why ``hostname`` does not point here, or None when it does."""
    if not resolved:
        return f"{hostname} does not resolve"
    if points_here(resolved, host_addrs, expected):
        return None

    targets = expected if expected else host_addrs
    what = "the expected address" if expected else "this host"
    if not targets:
        return (
            f"{hostname} resolves to {', '.join(resolved)}, but this host's addresses are unknown"
        )

    target_set = _normalise(targets)
    stray = [address for address in resolved if _normalise([address]).isdisjoint(target_set)]
    if len(stray) == len(resolved):
        return f"{hostname} resolves to {', '.join(resolved)}, not {what} ({', '.join(targets)})"
    return (
        f"{hostname} resolves to {', '.join(resolved)}: "
        f"{', '.join(stray)} is not {what} ({', '.join(targets)})"
    )
