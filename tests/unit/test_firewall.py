"""deploys/parts/firewall.py + facts/firewall.py: ufw state parsing, command builders,
and the refusal of a rule set that would cut the SSH session."""

from pathlib import Path

import pytest

from deploys.errors import ConfigError
from deploys.parts.firewall import firewall_problems, normalise_rules, ufw_commands
from facts.firewall import SEPARATOR, SshServerPort, parse_ufw

FIXTURES = Path(__file__).parent / "fixtures" / "facts"
PLAN = ["22/tcp", "80/tcp", "443/tcp"]


def captured(status: str, added: str) -> list[str]:
    lines = (FIXTURES / status).read_text().splitlines()
    return lines + [SEPARATOR] + (FIXTURES / added).read_text().splitlines()


def test_parse_active_firewall_with_the_plans_rules():
    state = parse_ufw(captured("ufw_status_verbose_active_debian12.txt", "ufw_show_added_debian12.txt"))
    assert state["active"] is True
    assert state["defaults"] == {"incoming": "deny", "outgoing": "allow", "routed": "deny"}
    assert state["allowed"] == PLAN  # v4 and v6 rows merged
    assert state["added"] == PLAN
    assert state["other"] == []


def test_parse_extra_rules_including_one_without_protocol():
    state = parse_ufw(captured("ufw_status_verbose_extra_rules_debian12.txt", "ufw_show_added_extra_rules_debian12.txt"))
    assert state["allowed"] == [*PLAN, "8080/tcp", "5432"]
    assert state["added"] == [*PLAN, "8080/tcp", "5432"]


def test_parse_inactive_firewall_still_lists_the_added_rules():
    state = parse_ufw(captured("ufw_status_verbose_inactive_debian12.txt", "ufw_show_added_extra_rules_debian12.txt"))
    assert state["active"] is False and state["allowed"] == [] and state["defaults"] == {}
    assert "8080/tcp" in state["added"]


def test_ssh_connection_port():
    assert SshServerPort().process(["172.22.0.1 50122 172.22.0.2 22"]) == 22
    assert SshServerPort().process(["garbage"]) is None


def test_normalise_rules():
    assert normalise_rules([22, "80/tcp", "53/udp", 22]) == ["22/tcp", "80/tcp", "53/udp"]
    assert normalise_rules(["443"]) == ["443/tcp"]
    with pytest.raises(ConfigError, match="'http' is not PORT"):
        normalise_rules(["http", 70000])


def test_commands_on_a_fresh_host_allow_ssh_first_and_enable_last():
    commands = ufw_commands(None, ["80/tcp", "22/tcp", "443/tcp"], protected=["22/tcp"])
    assert [" ".join(c) for c in commands] == [
        "ufw allow 22/tcp",
        "ufw allow 80/tcp",
        "ufw allow 443/tcp",
        "ufw default deny incoming",
        "ufw default allow outgoing",
        "ufw --force enable",
    ]


def test_no_commands_when_the_firewall_is_right():
    state = parse_ufw(captured("ufw_status_verbose_active_debian12.txt", "ufw_show_added_debian12.txt"))
    assert ufw_commands(state, PLAN, protected=["22/tcp"]) == []


def test_extra_rules_are_deleted():
    state = parse_ufw(captured("ufw_status_verbose_extra_rules_debian12.txt", "ufw_show_added_extra_rules_debian12.txt"))
    assert [" ".join(c) for c in ufw_commands(state, PLAN, protected=["22/tcp"])] == [
        "ufw delete allow 8080/tcp",
        "ufw delete allow 5432",
    ]


def test_inactive_firewall_is_enabled_without_touching_rules():
    state = parse_ufw(captured("ufw_status_verbose_inactive_debian12.txt", "ufw_show_added_debian12.txt"))
    state["defaults"] = {"incoming": "deny", "outgoing": "allow"}
    assert ufw_commands(state, PLAN, protected=["22/tcp"]) == [["ufw", "--force", "enable"]]


def test_protected_rule_is_never_deleted():
    state = {"active": True, "defaults": {"incoming": "deny", "outgoing": "allow"}, "added": ["2222/tcp", *PLAN]}
    assert ufw_commands(state, PLAN, protected=["2222/tcp"]) == []


def test_rule_set_without_the_ssh_port_is_refused():
    problems = firewall_problems([80, 443], ssh_ports=[22])
    assert len(problems) == 1 and "omits SSH port 22/tcp" in problems[0] and "lock the operator out" in problems[0]
    assert firewall_problems([22, 80, 443], ssh_ports=[22]) == []
    assert firewall_problems([22, 80, 443], ssh_ports=[2222])  # sshd moved: 22 is not enough
    assert firewall_problems([80, 443], ssh_ports=[]) == []  # @local: no session to cut
