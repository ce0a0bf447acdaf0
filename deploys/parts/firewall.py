"""Host firewall with ufw: deny incoming by default, allow a list of ports, enabled.

    from deploys.parts.firewall import firewall
    firewall(allow=[22, 80, 443])        # e.g. host.data.firewall_allow_tcp
    firewall(allow=[22, 80, 443, {"port": "8097/tcp", "from": "192.168.1.0/24"}])
                                         # a port open to one network only

Idempotent: `ufw_firewall` reads ufw's state (`facts.firewall.UfwStatus`) and runs only
the commands that close the gap (a missing allow, an extra rule, a default policy,
enabling). It never locks out the SSH session pyinfra runs through: the port of that
session (`$SSH_CONNECTION`, else every port sshd listens on) must be in the list, or the
deploy refuses before changing anything; its rule is added before ufw is enabled and is
never deleted.

Docker note: containers' published ports bypass ufw (Docker's own iptables chains come
first). Publish only on 127.0.0.1 behind nginx - the compose parts of this repository
enforce that - and ufw stays the single rule set for what the world can reach.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.operations import apt

from deploys.errors import ConfigError
from facts.firewall import SshServerPort, UfwStatus
from facts.sockets import ListeningSockets

_RULE = re.compile(r"^(\d{1,5})(/(tcp|udp))?$")


def _from_rule(item: dict, problems: list[str]) -> str | None:
    """`{"port": "8097/tcp", "from": "10.0.0.0/8"}` -> `"8097/tcp from 10.0.0.0/8"`."""
    port = item.get("port")
    text = f"{port}/tcp" if isinstance(port, int) else str(port)
    match = _RULE.match(text)
    try:
        network = str(ipaddress.ip_network(str(item.get("from")), strict=False))
    except ValueError:
        network = None
    if set(item) - {"port", "from"} or not match or not network or not 0 < int(match.group(1)) < 65536:
        problems.append(f"{item!r} is not {{'port': PORT[/tcp|udp], 'from': NETWORK}}")
        return None
    return f"{text if match.group(2) else text + '/tcp'} from {network}"


def rule_argv(rule: str) -> list[str]:
    """ufw arguments after `allow` for a normalised rule."""
    port_proto, _, network = rule.partition(" from ")
    if not network:
        return [port_proto]
    port, proto = port_proto.split("/")
    return ["from", network, "to", "any", "port", port, "proto", proto]


def normalise_rules(allow: Iterable[object]) -> list[str]:
    """`[22, "80/tcp", "53/udp"]` -> `["22/tcp", "80/tcp", "53/udp"]` (ints mean TCP);
    a dict `{"port", "from"}` -> `"PORT/PROTO from NETWORK"`."""
    rules, problems = [], []
    for item in allow:
        if isinstance(item, dict):
            rule = _from_rule(item, problems)
            if rule and rule not in rules:
                rules.append(rule)
            continue
        if isinstance(item, str) and " from " in item:  # already normalised
            port, _, network = item.partition(" from ")
            item = {"port": port, "from": network}
            rule = _from_rule(item, problems)
            if rule and rule not in rules:
                rules.append(rule)
            continue
        text = f"{item}/tcp" if isinstance(item, int) else str(item)
        match = _RULE.match(text)
        if not match or not 0 < int(match.group(1)) < 65536:
            problems.append(f"{item!r} is not PORT or PORT/tcp|udp")
        elif text not in rules:
            rules.append(text if match.group(2) else f"{text}/tcp")
    if problems:
        raise ConfigError("firewall allow list: " + "; ".join(problems))
    return rules


def firewall_problems(allow: Iterable[object], ssh_ports: Iterable[int]) -> list[str]:
    """Why a rule set must be refused: it would cut the SSH session the deploy uses."""
    try:
        rules = normalise_rules(allow)
    except ConfigError as exc:
        return [str(exc)]
    allowed_tcp = {int(r.split("/")[0]) for r in rules if r.endswith("/tcp")}  # from anywhere
    return [
        f"the firewall allow list {rules} omits SSH port {port}/tcp that this deploy is connected "
        "through: enabling it would lock the operator out"
        for port in sorted(set(ssh_ports)) if port not in allowed_tcp
    ]


def _covers(rule: str, present: Iterable[str]) -> bool:
    """A `22/tcp` rule is also covered by a protocol-less `22` rule."""
    return rule in present or rule.split("/")[0] in present


def ufw_commands(state: dict | None, rules: list[str], protected: Iterable[str] = ()) -> list[list[str]]:
    """The ufw commands (argv lists) that turn `state` into: these rules, deny incoming,
    allow outgoing, enabled. Protected (SSH) rules are added first and never deleted."""
    state = state or {"active": False, "defaults": {}, "added": [], "allowed": []}
    present = state.get("added") or []
    commands = []
    for rule in sorted(rules, key=lambda r: r not in set(protected)):
        if not _covers(rule, present):
            commands.append(["ufw", "allow", *rule_argv(rule)])
    for rule in present:
        if rule not in rules and not any(rule == r.split("/")[0] for r in rules) and rule not in protected:
            commands.append(["ufw", "delete", "allow", *rule_argv(rule)])
    defaults = state.get("defaults") or {}
    if defaults.get("incoming") != "deny":
        commands.append(["ufw", "default", "deny", "incoming"])
    if defaults.get("outgoing") != "allow":
        commands.append(["ufw", "default", "allow", "outgoing"])
    if not state.get("active"):
        commands.append(["ufw", "--force", "enable"])
    return commands


def session_ssh_ports() -> list[int]:
    """Ports the running deploy's SSH session may come through (see module doc)."""
    if host.connector_cls.__name__.lower().startswith("local"):
        return []
    port = host.get_fact(SshServerPort)
    if port:
        return [port]
    sockets = host.get_fact(ListeningSockets) or []
    ports = {s["port"] for s in sockets if s.get("process") == "sshd" and s.get("proto") == "tcp"}
    # Fail closed: sudo drops $SSH_CONNECTION and a socket-activated sshd shows as systemd;
    # then protect the port pyinfra connects to rather than nothing.
    return sorted(ports) or [int(host.data.get("ssh_port") or 22)]


@operation()
def ufw_firewall(rules: list[str], protected: list[str]):
    """ufw holds exactly `rules` (allow from anywhere), denies other incoming, is enabled."""
    state = host.get_fact(UfwStatus)
    if state and state.get("other"):
        host.log(f"ufw has rules this deploy does not manage (left alone): {state['other']}")
    commands = ufw_commands(state, rules, protected)
    if not commands:
        host.noop(f"ufw active, allowing only {', '.join(rules)}")
        return
    for argv in commands:
        yield StringCommand(*[QuoteString(a) for a in argv])


@deploy("Firewall (ufw)")
def firewall(allow: Iterable[object]):
    """ufw installed and enforcing `allow`; refuses a list that omits the SSH port in use."""
    rules = normalise_rules(allow)
    ssh_ports = session_ssh_ports()
    if problems := firewall_problems(rules, ssh_ports):
        raise ConfigError(f"firewall on {host.name}: " + "; ".join(problems))
    apt.packages(name="ufw package", packages=["ufw"], update=True, cache_time=3600)
    ufw_firewall(
        name=f"ufw: deny incoming, allow {', '.join(rules)}",
        rules=rules,
        protected=[f"{p}/tcp" for p in ssh_ports],
    )
