"""facts.sockets: ss parsing (captured on Debian 12, iproute2 6.1) and the real command."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from facts.sockets import (
    ListeningSockets,
    is_loopback_address,
    is_loopback_only,
    listeners_on,
    parse_ss,
    parse_ss_line,
    port_owner,
    split_address,
)

FIXTURES = Path(__file__).parent / "fixtures" / "facts"


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


@pytest.fixture(scope="module")
def root_sockets():
    return ListeningSockets().process(lines("ss_tulnp_root_debian12.txt"))


def find(sockets, proto, address, port):
    matches = [
        s for s in sockets if (s["proto"], s["address"], s["port"]) == (proto, address, port)
    ]
    assert len(matches) == 1, (proto, address, port, sockets)
    return matches[0]


# --- captured output, run as root -------------------------------------------------------


def test_root_capture_parses_every_line(root_sockets):
    assert len(root_sockets) == len(lines("ss_tulnp_root_debian12.txt")) == 12


def test_single_process_ipv4_loopback(root_sockets):
    assert find(root_sockets, "tcp", "127.0.0.1", 18080) == {
        "proto": "tcp",
        "address": "127.0.0.1",
        "port": 18080,
        "process": "python3",
        "pid": 3916,
        "pids": [3916],
        "interface": None,
    }


def test_several_processes_share_a_socket(root_sockets):
    # users:(("python3",pid=4116,fd=7),("python3",pid=4074,fd=7)): forked worker listed first
    sock = find(root_sockets, "tcp", "127.0.0.1", 18084)
    assert sock["pid"] == 4074  # the parent (lowest pid), as for nginx master + workers
    assert sock["pids"] == [4074, 4116]
    assert sock["process"] == "python3"


def test_interface_suffix_is_split_off(root_sockets):
    tcp = find(root_sockets, "tcp", "127.0.0.54", 18083)
    udp = find(root_sockets, "udp", "127.0.0.54", 18083)
    assert tcp["interface"] == udp["interface"] == "lo"
    v6 = find(root_sockets, "udp", "::1", 18085)  # [::1]%lo:18085
    assert v6["interface"] == "lo"
    link_local = find(root_sockets, "tcp", "fe80::fc:ff:fe00:1", 18086)  # [fe80::..]%eth0
    assert link_local["interface"] == "eth0"


def test_ipv6_brackets_and_wildcards(root_sockets):
    assert find(root_sockets, "tcp", "::", 18082)["pid"] == 4074  # [::]:18082 (v6only)
    assert find(root_sockets, "tcp", "0.0.0.0", 18082)["pid"] == 4074
    assert find(root_sockets, "tcp", "*", 18081)["process"] == "python3"  # dual-stack
    assert find(root_sockets, "udp", "::1", 18054)["pid"] == 3918


def test_line_without_users_even_as_root(root_sockets):
    # the VM's init listens on 2024 from another PID namespace: no users:(...) column
    sock = find(root_sockets, "tcp", "0.0.0.0", 2024)
    assert (sock["process"], sock["pid"], sock["pids"]) == (None, None, [])


def test_nonroot_capture_has_no_owners():
    sockets = parse_ss(lines("ss_tulnp_nonroot_debian12.txt"))
    assert len(sockets) == 12
    assert all(s["process"] is None and s["pid"] is None for s in sockets)
    assert find(sockets, "tcp", "fe80::fc:ff:fe00:1", 18086)["interface"] == "eth0"
    assert port_owner(sockets, 18080) is None
    assert is_loopback_only(sockets, 18080)


# --- hand-written lines for formats not reproducible here (marked as such) -----------------


@pytest.mark.parametrize(
    "local, expected",
    [
        ("0.0.0.0:80", ("0.0.0.0", None, 80)),
        ("[::]:80", ("::", None, 80)),
        ("*:22", ("*", None, 22)),
        ("127.0.0.53%lo:53", ("127.0.0.53", "lo", 53)),
        ("[::1]%lo:53", ("::1", "lo", 53)),
        ("[fe80::1]%eth0:123", ("fe80::1", "eth0", 123)),
        # hand-written: older iproute2 styles
        ("[fe80::1%eth0]:123", ("fe80::1", "eth0", 123)),
        (":::22", ("::", None, 22)),
        ("0.0.0.0:*", ("0.0.0.0", None, None)),
    ],
)
def test_split_address(local, expected):
    assert split_address(local) == expected


def test_hand_written_systemd_socket_activation_names_the_service():
    # hand-written: systemd holds the fd for a socket-activated sshd
    line = 'tcp LISTEN 0 4096 *:22 *:* users:(("sshd",pid=812,fd=3),("systemd",pid=1,fd=54))'
    sock = parse_ss_line(line)
    assert (sock["process"], sock["pid"], sock["pids"]) == ("sshd", 812, [1, 812])


def test_hand_written_only_systemd_holds_the_socket():
    line = 'tcp LISTEN 0 4096 0.0.0.0:9100 0.0.0.0:* users:(("systemd",pid=1,fd=60))'
    assert parse_ss_line(line)["process"] == "systemd"


def test_hand_written_process_name_with_spaces_commas_and_parens():
    line = 'tcp LISTEN 0 128 127.0.0.1:9000 0.0.0.0:* users:(("php-fpm: (a,b)",pid=77,fd=8))'
    sock = parse_ss_line(line)
    assert (sock["process"], sock["pid"]) == ("php-fpm: (a,b)", 77)


@pytest.mark.parametrize(
    "line",
    ["", "   ", "Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port Process",
     "u_str LISTEN 0 4096 /run/systemd/private 13 * 0", "tcp LISTEN 0 128"],
)
def test_unparsable_lines_are_skipped(line):
    assert parse_ss_line(line) is None


# --- helpers ------------------------------------------------------------------------------


def test_listeners_on(root_sockets):
    assert {s["address"] for s in listeners_on(root_sockets, 18082)} == {"0.0.0.0", "::"}
    assert [s["proto"] for s in listeners_on(root_sockets, 18083, "udp")] == ["udp"]
    assert len(listeners_on(root_sockets, "18083")) == 2  # port as a string from config
    assert listeners_on(root_sockets, 9999) == []


@pytest.mark.parametrize(
    "port, proto, expected",
    [
        (18084, None, True),  # 127.0.0.1, shared by two processes
        (18083, None, True),  # 127.0.0.54%lo, tcp and udp
        (18054, None, True),  # [::1]
        (18085, None, True),  # [::1]%lo
        (18082, None, False),  # 0.0.0.0 and [::]
        (18081, None, False),  # * (dual-stack wildcard)
        (18086, None, False),  # fe80:: link-local on eth0
        (2024, None, False),  # 0.0.0.0 without owner
        (9999, None, False),  # nothing listens: nothing to vouch for
        (18053, "tcp", False),  # only a udp listener there
    ],
)
def test_is_loopback_only(root_sockets, port, proto, expected):
    assert is_loopback_only(root_sockets, port, proto) is expected


def test_is_loopback_only_is_false_when_one_listener_is_public():
    sockets = parse_ss(
        [  # hand-written: same port on loopback and on a public address
            'tcp LISTEN 0 511 127.0.0.1:8095 0.0.0.0:* users:(("python3",pid=10,fd=3))',
            'tcp LISTEN 0 511 203.0.113.9:8095 0.0.0.0:* users:(("python3",pid=10,fd=4))',
        ]
    )
    assert not is_loopback_only(sockets, 8095)
    assert is_loopback_only(sockets[:1], 8095)


@pytest.mark.parametrize(
    "address, expected",
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("0.0.0.0", False), ("::", False), ("*", False), ("10.0.0.5", False),
     ("::ffff:10.0.0.5", False), ("fe80::1", False)],
)
def test_is_loopback_address(address, expected):
    assert is_loopback_address(address) is expected


def test_port_owner(root_sockets):
    assert port_owner(root_sockets, 18084) == "python3"
    assert port_owner(root_sockets, 2024) is None  # owner not visible
    assert port_owner(root_sockets, 9999) is None  # nothing listens


def test_port_owner_prefers_tcp():
    sockets = parse_ss(
        [  # hand-written: DNS server on 53 udp (owner unknown) + tcp
            'udp UNCONN 0 0 127.0.0.53%lo:53 0.0.0.0:* users:(("dnsmasq",pid=5,fd=4))',
            'tcp LISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:* users:(("systemd-resolve",pid=6,fd=5))',
        ]
    )
    assert port_owner(sockets, 53) == "systemd-resolve"
    assert port_owner(sockets, 53, "udp") == "dnsmasq"


# --- the real command on this machine -----------------------------------------------------


def test_fact_declares_ss_and_command():
    fact = ListeningSockets()
    assert fact.requires_command() == "ss"
    assert fact.command() == "ss -H -tulnp"
    assert fact.default() == []


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_real_ss_sees_our_own_listeners():
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.bind(("::1", 0))
    wild = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    wild.bind(("0.0.0.0", 0))
    wild.listen()
    try:
        result = subprocess.run(
            ["sh", "-c", ListeningSockets().command()], capture_output=True, text=True, check=True
        )
        sockets = ListeningSockets().process(result.stdout.splitlines())
        tcp_port, udp_port, wild_port = (
            tcp.getsockname()[1], udp6.getsockname()[1], wild.getsockname()[1]
        )

        mine = find(sockets, "tcp", "127.0.0.1", tcp_port)
        assert mine["pid"] == os.getpid()  # ss shows the owner of one's own sockets
        assert find(sockets, "udp", "::1", udp_port)["proto"] == "udp"
        assert is_loopback_only(sockets, tcp_port)
        assert is_loopback_only(sockets, udp_port)
        assert not is_loopback_only(sockets, wild_port)
    finally:
        tcp.close()
        udp6.close()
        wild.close()
