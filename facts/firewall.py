"""ufw's state on a host: active or not, default policies and the allowed ports.

Why both `ufw status verbose` and `ufw show added`: while ufw is inactive, `status`
prints nothing but "Status: inactive", yet the rules already added are what enabling
it will apply; `show added` lists them in either state.
"""

from __future__ import annotations

import re
from typing import Any

from pyinfra.api import FactBase
from typing_extensions import override

SEPARATOR = "--- ufw show added ---"
_DEFAULT = re.compile(r"(\w+) \((incoming|outgoing|routed)\)")
_ADDED = re.compile(r"^ufw allow (?:in )?(\d+)(?:/(tcp|udp))?$")
_ADDED_FROM = re.compile(r"^ufw allow (?:in )?from (\S+) to any port (\d+) proto (tcp|udp)$")
_STATUS_RULE = re.compile(r"^(\d+)(?:/(tcp|udp))?(?: \(v6\))?\s+ALLOW(?: IN)?\s+Anywhere")


def _rule(port: str, proto: str | None) -> str:
    """`22/tcp`, or `5432` for a rule without a protocol (tcp and udp)."""
    return f"{int(port)}/{proto}" if proto else str(int(port))


def parse_ufw(output: list[str]) -> dict[str, Any]:
    """`{"active", "defaults": {incoming, outgoing, routed}, "allowed": [...], "added": [...]}`.

    `allowed`: rules in effect (status, v4 and v6 merged); `added`: the rules ufw holds
    (applied when it is enabled). Rules other than a plain `allow PORT[/PROTO]` from
    anywhere go to `other`, so they are never silently ignored.
    """
    status_lines, added_lines, seen_separator = [], [], False
    for line in output:
        if line.strip() == SEPARATOR:
            seen_separator = True
        elif seen_separator:
            added_lines.append(line.strip())
        else:
            status_lines.append(line.rstrip())
    result: dict[str, Any] = {"active": False, "defaults": {}, "allowed": [], "added": [], "other": []}
    in_rules = False
    for line in status_lines:
        if line.startswith("Status:"):
            result["active"] = line.split(":", 1)[1].strip() == "active"
        elif line.startswith("Default:"):
            result["defaults"] = {where: policy for policy, where in _DEFAULT.findall(line)}
        elif line.startswith("--"):
            in_rules = True
        elif in_rules and line.strip():
            match = _STATUS_RULE.match(line.strip())
            rule = _rule(*match.groups()) if match else None
            if rule and rule not in result["allowed"]:
                result["allowed"].append(rule)
            elif not rule and line.strip() not in result["other"]:
                result["other"].append(line.strip())
    for line in added_lines:
        match = _ADDED.match(line)
        from_match = _ADDED_FROM.match(line)
        if match:
            result["added"].append(_rule(*match.groups()))
        elif from_match:  # one network only: "8097/tcp from 10.0.0.0/8"
            network, port, proto = from_match.groups()
            result["added"].append(f"{_rule(port, proto)} from {network}")
        elif line.startswith("ufw ") and line not in result["other"]:
            result["other"].append(line)
    return result


class UfwStatus(FactBase[dict[str, Any] | None]):
    """parse_ufw() of the host's ufw; None when ufw is not installed."""

    requires_command = "ufw"

    @override
    def command(self) -> str:
        return f"LC_ALL=C ufw status verbose && echo '{SEPARATOR}' && LC_ALL=C ufw show added"

    @staticmethod
    @override
    def default() -> dict[str, Any] | None:
        return None

    @override
    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_ufw(output)


class SshServerPort(FactBase[int | None]):
    """The server port of the SSH connection this fact runs over (`$SSH_CONNECTION`).

    None over other connectors (@local, docker): then there is no session to lock out.
    """

    @override
    def command(self) -> str:
        return 'echo "${SSH_CONNECTION:-}"'

    @staticmethod
    @override
    def default() -> int | None:
        return None

    @override
    def process(self, output: list[str]) -> int | None:
        parts = " ".join(output).split()
        return int(parts[3]) if len(parts) == 4 and parts[3].isdigit() else None
