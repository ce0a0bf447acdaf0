"""music's host-side switch (music_switch_on_host): the hooks it hands release-switch are
shell command lines that parse, gate through the script's own http-check, clear the start
limit before the start, and tag/restore the data backup the way data_dir_steps does."""

from __future__ import annotations

import subprocess

from deploys.music import App, legacy_cleanup_command
from deploys.parts.data_backup import data_dir_host_steps
from deploys.parts.releases import SWITCH_SCRIPT, HostSwitch, Switch, switch_plan
from deploys.parts.service import ServiceSpec


def app() -> App:
    spec = ServiceSpec.from_data({"name": "music-assistant", "exec_start": "/opt/music-assistant/venv/bin/mass",
                                  "user": "music-assistant", "create_user": False,
                                  "working_dir": "/opt/music-assistant"})
    return App("Music Assistant", "/opt/music-assistant", "app", spec, "http://127.0.0.1:8095/info", check=None,
               data_dir="/opt/music-assistant/data", health_field="server_version")


def parses(command: str) -> bool:
    return subprocess.run(["sh", "-n", "-c", command], capture_output=True).returncode == 0


def test_hooks_are_command_lines_that_parse():
    comp = app().host_component_for("abc123")
    for hook in (comp.stop, comp.start, comp.gate, comp.report, legacy_cleanup_command(app())):
        assert isinstance(hook, str) and parses(hook), hook
    assert comp.stop == "systemctl stop music-assistant.service"
    assert comp.start.index("reset-failed music-assistant.service") < comp.start.index("systemctl restart")
    assert comp.gate == f"python3 {SWITCH_SCRIPT} http-check http://127.0.0.1:8095/info server_version"
    assert "journalctl -u music-assistant.service" in comp.report


def test_data_commands_tag_the_backup_and_restore_for_a_rollback():
    steps = data_dir_host_steps("/opt/music-assistant/data", "/opt/music-assistant/backups", 5, "music-assistant",
                                restore_for="0123456789ab")
    assert "$RELEASE_TAG.tar.gz" in steps.backup and '"$RELEASE_BACKUP"' in steps.restore
    assert "-0123456789ab.tar.gz" in steps.prepare and "restored from" in steps.prepare
    assert all(parses(c) for c in (steps.backup, steps.restore, steps.prepare))
    assert data_dir_host_steps("/d", "/b", 5, "u").prepare == ""


def test_plan_carries_the_gate_bounds_and_the_unit_bound_covers_them():
    on_host = HostSwitch("music-release", gate_timeout_s=20, gate_interval_s=2)
    plan = switch_plan("/opt/music-assistant", ["app"], [app().host_component_for("abc123")], None,
                       Switch("deploy", {"commit": "c"}), 4, "", on_host)
    assert plan["components"][0]["rid"] == "abc123" and plan["gate_timeout_s"] == 20 and plan["keep"] == 4
    assert plan["meta"] == {"commit": "c"} and plan["data"] is None
    assert on_host.timeout_s(1, True) > 9 * on_host.hook_timeout_s + 20
