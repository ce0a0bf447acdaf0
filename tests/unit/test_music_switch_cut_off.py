"""A host-side switch cut off ITSELF (music-release.service killed, the host rebooted) after
its link switch: the live link already is the wanted release, and its journal is left.

Found with the real Music Assistant 2.3.0 (session 9): the next apply saw nothing to switch,
recorded the release as `cut-off` and left the journal; the NEXT upgrade's release-switch
then "rolled back the earlier switch" and restored the data backed up before it, setting
aside everything MA had written in between (library rows lost from the live data). Now
`releases_switched_on_host` runs release-switch whenever a journal is left
(`switch_cut_off`), so the very next apply finishes or rolls back that switch, then switches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from pyinfra.api import FunctionCommand, StringCommand
from pyinfra.facts.files import File

from deploys.parts import releases
from deploys.parts.releases import HostSwitch, Switch
from facts.releases import Releases
from tests.unit.test_release_switch_script import NAMES, SCRIPT, component, fact, killed_once_a2_started, live, plan, root  # noqa: F401

class LocalHost:
    """The two facts releases_switched_on_host reads, from a local root."""

    name = "local"

    def __init__(self):
        self.logged = []

    def get_fact(self, cls, **kwargs):
        if cls is Releases:
            return fact(Path(kwargs["root"]))
        assert cls is File, cls
        return {"size": 1} if Path(kwargs["path"]).is_file() else None

    def log(self, message):
        self.logged.append(message)

    noop = log

def switch_commands(monkeypatch, root: Path, components) -> tuple[list, list[str]]:
    fake = LocalHost()
    monkeypatch.setattr(releases, "host", fake)
    monkeypatch.setattr(releases, "state", SimpleNamespace(is_executing=True))
    body = json.loads(plan(root, components).read_text())
    data = releases.HostData(**body["data"])
    commands = list(releases.releases_switched_on_host._inner(
        root=str(root), names=NAMES, components=components, on_host=HostSwitch("t-release", gate_timeout_s=1,
                                                                                gate_interval_s=0.1),
        data=data, switch=Switch("deploy", {"commit": "abc"}), keep=3))
    return commands, fake.logged

def unit_killed_after_its_link_switch(root: Path) -> None:
    """release-switch to backend a2, SIGKILLed (as systemd kills the unit) once it started a2."""
    killed_once_a2_started(root)
    (root / "data" / "schema").write_text("v1\nmigrated\nwritten by a2 after the kill\n")

def test_no_journal_and_nothing_to_switch_changes_nothing(monkeypatch, root):  # noqa: F811
    commands, logged = switch_commands(monkeypatch, root, [component("backend", "a1"), component("frontend", "b1")])
    assert commands == [] and any("is live" in line for line in logged), logged

def test_next_apply_runs_the_switch_when_one_was_cut_off_though_the_links_are_wanted(monkeypatch, root):  # noqa: F811
    unit_killed_after_its_link_switch(root)
    assert live(root, "backend") == "releases/backend/a2"  # what the plan wants: no change by the links
    commands, logged = switch_commands(monkeypatch, root, [component("backend", "a2"), component("frontend", "b1")])
    assert any("was cut off" in line for line in logged), logged
    write_plan, step = commands
    assert isinstance(write_plan, StringCommand) and ".switch-plan.json" in write_plan.get_raw_value()
    assert isinstance(step, FunctionCommand)  # the host step, not a `cut-off` history line
    assert "t-release" in str(step.args[0].get_raw_value()) and "run" in str(step.args[0].get_raw_value())
    # what that step runs: the script finishes or rolls back the cut-off switch, then switches
    subprocess.run(["sh", "-c", write_plan.get_raw_value()], check=True)
    out = subprocess.run([sys.executable, str(SCRIPT), "run", str(root / "releases" / ".switch-plan.json")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cut off at phase 'started': rolling it back first" in out.stdout and "switching backend a1 -> a2" in out.stdout
    assert not (root / "releases" / ".switch.json").exists() and live(root, "backend") == "releases/backend/a2"
    history = fact(root)["history"]
    assert [(h["action"], h["components"]["backend"]) for h in history] == [("deploy", "a1"), ("deploy", "a2")]
    # a later switch finds no journal: nothing of what a2 writes from now on is set aside
    commands, _ = switch_commands(monkeypatch, root, [component("backend", "a2"), component("frontend", "b1")])
    assert commands == []
