"""facts.dns: getent / ip -j parsing (captured on Debian 12), the real commands, helpers.

getent_ahosts_multi_debian12.txt and getent_ahosts_localhost_v4v6_debian12.txt are real
getent output captured with a temporary /etc/hosts bind-mounted in a private mount namespace
(the capture machine has no working DNS).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from facts.dns import (
    HostAddresses,
    ResolvedAddresses,
    dns_problem,
    parse_getent_ahosts,
    parse_hostname_i,
    parse_ip_addr_json,
    points_here,
)

FIXTURES = Path(__file__).parent / "fixtures" / "facts"
SHELLS = [sh for sh in ("sh", "bash") if shutil.which(sh)]


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def run(command, shell="sh", env=None) -> subprocess.CompletedProcess:
    raw = command if isinstance(command, str) else command.get_raw_value()
    return subprocess.run(
        [shutil.which(shell) or shell, "-c", raw], capture_output=True, text=True, env=env
    )


# --- ResolvedAddresses --------------------------------------------------------------------


def test_getent_multiple_addresses_deduplicated_in_resolver_order():
    assert ResolvedAddresses().process(lines("getent_ahosts_multi_debian12.txt")) == [
        "203.0.113.9",
        "203.0.113.10",
        "2001:db8::9",
    ]


def test_getent_localhost_v4_and_v6():
    assert parse_getent_ahosts(lines("getent_ahosts_localhost_v4v6_debian12.txt")) == [
        "::1",
        "127.0.0.1",
    ]
    assert parse_getent_ahosts(lines("getent_ahosts_localhost_debian12.txt")) == ["127.0.0.1"]


def test_getent_garbage_and_blank_lines_ignored():
    assert parse_getent_ahosts(["", "getent: oops", "2001:DB8:0::9 STREAM x"]) == ["2001:db8::9"]


def test_resolved_default_is_empty_list():
    assert ResolvedAddresses.default() == []
    assert ResolvedAddresses().requires_command(hostname="x") == "getent"


@pytest.mark.skipif(shutil.which("getent") is None, reason="needs getent")
@pytest.mark.parametrize("shell", SHELLS)
def test_real_getent_localhost(shell):
    result = run(ResolvedAddresses().command("localhost"), shell)
    assert result.returncode == 0
    assert "127.0.0.1" in parse_getent_ahosts(result.stdout.splitlines())


@pytest.mark.skipif(shutil.which("getent") is None, reason="needs getent")
def test_real_getent_nxdomain_exits_0_with_no_output():
    # getent exits 2 here; pyinfra would fail the host on a non-zero exit
    result = run(ResolvedAddresses().command("does-not-exist.invalid"))
    assert (result.returncode, result.stdout) == (0, "")


@pytest.mark.skipif(shutil.which("getent") is None, reason="needs getent")
@pytest.mark.parametrize("shell", SHELLS)
def test_hostile_hostname_is_one_argument(tmp_path, shell):
    marker = tmp_path / "pwned"
    hostname = f"it's.invalid; touch {marker}; echo '$(touch {marker})"
    command = ResolvedAddresses().command(hostname)
    result = run(command, shell)
    assert result.returncode == 0
    assert result.stdout == ""
    assert not marker.exists()
    assert "-- 'it'\"'\"'s.invalid" in command.get_raw_value()


# --- HostAddresses ------------------------------------------------------------------------


def test_ip_json_keeps_only_global_addresses():
    text = (FIXTURES / "ip_j_addr_debian12.json").read_text()
    # lo 127.0.0.1/::1 (scope host) and fe80:: (scope link) are dropped
    assert HostAddresses().process(text.splitlines()) == ["192.0.2.2", "fd00::2"]


def test_ip_json_hand_written_tentative_and_docker_bridge():
    # hand-written (shape of `ip -j addr`): a DAD-tentative address is not usable yet
    text = (
        '[{"ifname":"eth0","addr_info":[{"family":"inet","local":"10.0.0.5","scope":"global"},'
        '{"family":"inet6","local":"2001:db8::5","scope":"global","tentative":true}]},'
        '{"ifname":"docker0","addr_info":'
        '[{"family":"inet","local":"172.17.0.1","scope":"global"}]}]'
    )
    assert parse_ip_addr_json(text) == ["10.0.0.5", "172.17.0.1"]


def test_hostname_i_fallback_format():
    assert HostAddresses().process(lines("hostname_I_debian12.txt")) == ["192.0.2.2", "fd00::2"]
    # hand-written: older hostname -I may include these; they are dropped
    assert parse_hostname_i("10.0.0.5 127.0.1.1 fe80::1 2001:db8::5 \n") == [
        "10.0.0.5", "2001:db8::5"
    ]


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2")
def test_real_host_addresses_uses_ip_json():
    result = run(HostAddresses().command())
    assert result.returncode == 0
    assert result.stdout.lstrip().startswith("[")
    addresses = HostAddresses().process(result.stdout.splitlines())
    assert "127.0.0.1" not in addresses and "::1" not in addresses
    assert not any(a.startswith("fe80:") for a in addresses)


@pytest.mark.skipif(shutil.which("hostname") is None, reason="needs hostname")
def test_real_host_addresses_falls_back_to_hostname_i_without_ip(tmp_path):
    bin_dir = tmp_path / "bin"  # PATH with hostname but no ip
    bin_dir.mkdir()
    (bin_dir / "hostname").symlink_to(shutil.which("hostname"))
    result = run(HostAddresses().command(), env={**os.environ, "PATH": str(bin_dir)})
    assert result.returncode == 0
    expected = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout
    assert result.stdout == expected
    assert HostAddresses().process(result.stdout.splitlines()) == parse_hostname_i(expected)


# --- points_here / dns_problem ------------------------------------------------------------

HOST = ["10.0.0.5", "2001:db8::5"]


@pytest.mark.parametrize(
    "resolved, host_addrs, expected, answer",
    [
        (["10.0.0.5"], HOST, None, True),
        (["10.0.0.5", "2001:db8::5"], HOST, None, True),
        (["2001:DB8:0:0::5"], HOST, None, True),  # IPv6 text forms are normalised
        (["203.0.113.9"], HOST, None, False),
        (["10.0.0.5", "203.0.113.9"], HOST, None, False),  # one stray record is enough
        ([], HOST, None, False),  # does not resolve
        (["10.0.0.5"], [], None, False),  # host addresses unknown
        (["198.51.100.7"], HOST, ["198.51.100.7"], True),  # NAT: public address given
        (["10.0.0.5"], HOST, ["198.51.100.7"], False),  # expected overrides host addresses
        (["10.0.0.5"], HOST, [], True),  # empty expected falls back to host addresses
    ],
)
def test_points_here(resolved, host_addrs, expected, answer):
    assert points_here(resolved, host_addrs, expected) is answer


def test_dns_problem_messages():
    name = "music.example.com"
    assert dns_problem(name, ["10.0.0.5"], ["10.0.0.5"]) is None
    assert dns_problem(name, [], ["10.0.0.5"]) == "music.example.com does not resolve"
    assert (
        dns_problem(name, ["203.0.113.9"], ["10.0.0.5"])
        == "music.example.com resolves to 203.0.113.9, not this host (10.0.0.5)"
    )
    assert (
        dns_problem(name, ["10.0.0.5", "203.0.113.9"], ["10.0.0.5"])
        == "music.example.com resolves to 10.0.0.5, 203.0.113.9: 203.0.113.9 is not this host "
        "(10.0.0.5)"
    )
    assert (
        dns_problem(name, ["10.0.0.5"], ["10.0.0.5"], expected=["198.51.100.7"])
        == "music.example.com resolves to 10.0.0.5, not the expected address (198.51.100.7)"
    )
    assert dns_problem(name, ["198.51.100.7"], ["10.0.0.5"], expected=["198.51.100.7"]) is None
    assert dns_problem(name, ["10.0.0.5"], []) == (
        "music.example.com resolves to 10.0.0.5, but this host's addresses are unknown"
    )
