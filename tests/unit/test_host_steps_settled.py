"""host_steps.settled(unit): while the deploy is planned, an unfinished run of the unit (a
release switch whose apply was cut off) is waited for and its end reported, so the run
plans from what it left; nothing runs when there is none. The wait script runs for real
against the fake systemctl of test_host_steps."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from deploys.errors import ConfigError
from deploys.parts import host_steps
from tests.unit.test_host_steps import FAKES as SYSTEM_FAKES

# as test_host_steps' fakes, and `systemctl --user ...` answers the same
FAKES = {**SYSTEM_FAKES, "systemctl": SYSTEM_FAKES["systemctl"].replace(
    'echo "systemctl $*" >> "$LOG"\n', 'echo "systemctl $*" >> "$LOG"\n[ "$1" = --user ] && shift\n')}


class FakeHost:
    """get_fact(UnitState) answers `states` in turn; shell commands run locally."""

    def __init__(self, tmp_path, states, **env):
        self.states, self.logs, self.commands = list(states), [], []
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name, text in FAKES.items():
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        self.env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(tmp_path / "log"), "STATE": str(tmp_path / "state"),
                    **env}

    def get_fact(self, fact, **kwargs):
        assert fact is host_steps.UnitState
        return self.states.pop(0)

    def run_shell_command(self, command):
        self.commands.append(command)
        proc = subprocess.run(["sh", "-c", command.get_raw_value()], env=self.env, capture_output=True, text=True)
        return proc.returncode == 0, SimpleNamespace(stdout_lines=proc.stdout.splitlines(),
                                                     stderr_lines=proc.stderr.splitlines())

    def log(self, line):
        self.logs.append(line)


def test_nothing_unfinished_nothing_waits(tmp_path, monkeypatch):
    fake = FakeHost(tmp_path, [{"ActiveState": "inactive", "Result": "success"}])
    monkeypatch.setattr(host_steps, "host", fake)
    host_steps.settled("music-release")
    assert fake.commands == [] and fake.logs == []


@pytest.mark.parametrize("scope, log", [("system", None), ("user", "/home/yt/p/release-switch.log")])
def test_an_unfinished_run_is_waited_for_before_planning_and_its_end_reported(tmp_path, monkeypatch, scope, log):
    fake = FakeHost(tmp_path, [{"ActiveState": "active"}, {"ActiveState": "failed", "Result": "exit-code"}],
                    ACTIVE_ROUNDS="3", RESULT="exit-code")
    monkeypatch.setattr(host_steps, "host", fake)
    host_steps.settled("aqa-youtube-prod-release", scope=scope, log=log)
    assert len(fake.commands) == 1
    calls = (tmp_path / "log").read_text().splitlines()
    user = "--user " if scope == "user" else ""
    assert sum(c.startswith(f"systemctl {user}is-active aqa-youtube-prod-release.service") for c in calls) == 4  # waited
    assert not any(c.startswith("systemd-run") for c in calls)  # it only waits: starts nothing
    text = "\n".join(fake.logs)
    assert "aqa-youtube-prod-release.service is still running (an apply was cut off): waiting for it before planning" in text
    assert "the earlier run ended: exit-code" in text  # the wait script's own note
    assert fake.logs[-1] == "aqa-youtube-prod-release.service: the earlier run ended (exit-code); planning from what it left"


def test_bad_unit_names_and_a_user_step_without_a_log_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(host_steps, "host", FakeHost(tmp_path, []))
    with pytest.raises(ConfigError):
        host_steps.settled("bad unit; rm -rf /")
    with pytest.raises(ConfigError):
        host_steps.settled("aqa-youtube-prod-release", scope="user")
