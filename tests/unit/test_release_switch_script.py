"""templates/opt/infra/bin/release-switch (the host-side switch) run in a temporary root
with fake hooks (shell command lines): a switch that goes through, a failed gate and a
failed start rolled back with links and data, a run killed mid-way that the next run rolls
back before it switches again; and its ids, history lines and prune plan are those of
deploys/parts/releases.py (the controller lists and rolls back what the script writes)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploys.parts import release_records, releases
from deploys.parts.data_backup import data_dir_host_steps
from deploys.parts.releases import Component, HostData, HostSwitch, Switch, switch_plan
from facts.releases import RELEASES_SCRIPT, Releases

SCRIPT = Path(__file__).resolve().parents[2] / "templates/opt/infra/bin/release-switch"
NAMES = ["backend", "frontend"]


def load_script():
    loader = importlib.machinery.SourceFileLoader("release_switch", str(SCRIPT))
    spec = importlib.util.spec_from_loader("release_switch", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def fact(root: Path) -> dict:
    out = subprocess.run(["python3", "-c", RELEASES_SCRIPT, "state", str(root), " ".join(NAMES)], capture_output=True, text=True,
                         check=True)
    return Releases().process(out.stdout.splitlines())


def make_release(root: Path, name: str, rid: str) -> None:
    path = root / "releases" / name / rid
    path.mkdir(parents=True)
    (path / "release.json").write_text(json.dumps({"id": rid, "built_at": "2026-01-01T00:00:00", "commit": "c" + rid}))
    (path / ".complete").touch()


def link(root: Path, name: str, rid: str) -> None:
    (root / name).symlink_to(f"releases/{name}/{rid}")


def live(root: Path, name: str) -> str:
    return os.readlink(root / name)


# Hooks: start records which release the link points at (and fails when it holds `nostart`),
# the gate fails while the live release holds `broken` (or sleeps while it holds `slow`).
LIVE = '$(basename "$(readlink "$RELEASE_ROOT/{n}")")'
REL = '"$RELEASE_ROOT/releases/{n}/' + LIVE + '"'


def component(name: str, rid: str) -> Component:
    rel = REL.format(n=name)
    return Component(
        name, rid,
        stop=f'echo "stop {name} {LIVE.format(n=name)}" >> "$RELEASE_ROOT/events"',
        start=f'[ ! -e {rel}/nostart ] && echo "start {name} {LIVE.format(n=name)}" >> "$RELEASE_ROOT/events"',
        gate=f'while [ -e {rel}/slow ]; do sleep 0.1; done; [ ! -e {rel}/broken ] && echo ok',
        report=f'echo "Unit {name}: failed"',
    )


def plan(root: Path, components: list[Component], action: str = "deploy", keep: int = 3, restore_for=None,
         migrate: str = 'echo migrated >> "$RELEASE_ROOT/data/schema"') -> Path:
    owner = pwd.getpwuid(os.getuid()).pw_name  # (the real owner is the service user)
    data = data_dir_host_steps(str(root / "data"), str(root / "backups"), 5, owner, restore_for=restore_for)
    if not restore_for:  # a migration the rollback must undo
        data = HostData(data.backup, data.restore, migrate)
    body = switch_plan(str(root), NAMES, components, data, Switch(action, {"commit": "abc", "by": "me@h"}), keep, "",
                       HostSwitch("t-release", gate_timeout_s=1, gate_interval_s=0.1, hook_timeout_s=30))
    path = root / "plan.json"
    path.write_text(json.dumps(body))
    return path


def run(plan_path: Path, check: bool | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), "run", str(plan_path)], capture_output=True, text=True, timeout=60)
    if check is not None:
        assert (proc.returncode == 0) == check, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def root(tmp_path):
    """backend a1 and frontend b1 live (recorded), backend a2 built beside; data/schema v1."""
    root = tmp_path / "app"
    for name, rid in (("backend", "a1"), ("frontend", "b1"), ("backend", "a2")):
        make_release(root, name, rid)
    link(root, "backend", "a1")
    link(root, "frontend", "b1")
    (root / "data").mkdir()
    (root / "data" / "schema").write_text("v1\n")
    first = releases.history_entry({"backend": "a1", "frontend": "b1"}, {}, "deploy")
    (root / "releases" / "history.jsonl").write_text(json.dumps(first) + "\n")
    return root


def test_ids_history_and_prune_are_the_release_records_librarys():
    """The script keeps no copy: it imports templates/opt/infra/lib/release_records.py, the
    file deploys/parts/releases.py takes its ids, history lines and prune plan from."""
    script = load_script()
    for name in ("app_id", "history_entry", "append_history", "state_of", "prune", "unrecorded_live"):
        assert Path(getattr(script, name).__code__.co_filename).resolve() == release_records.SOURCE.resolve(), name
    assert releases.prune_plan is release_records.lib.prune_plan and releases.app_id is release_records.lib.app_id


def test_switch_goes_through_and_records_it_in_the_same_process(root):
    run(plan(root, [component("backend", "a2"), component("frontend", "b1")]), check=True)
    assert live(root, "backend") == "releases/backend/a2" and live(root, "frontend") == "releases/frontend/b1"
    assert (root / "events").read_text().splitlines() == ["stop backend a1", "start backend a2"]  # only what changed
    st = fact(root)
    last = st["history"][-1]
    assert last["id"] == releases.app_id({"backend": "a2", "frontend": "b1"}) and last["action"] == "deploy"
    assert last["from"] == releases.app_id({"backend": "a1", "frontend": "b1"}) and last["commit"] == "abc"
    assert last["backup"] and Path(last["backup"]).is_file() and releases.app_id({"backend": "a1", "frontend": "b1"}) in last["backup"]
    assert (root / "data" / "schema").read_text() == "v1\nmigrated\n"
    assert not (root / "releases" / ".switch.json").exists()
    assert releases.unrecorded_live(st, NAMES) is None
    assert releases.rollback_target(st, NAMES, None)["components"] == {"backend": "a1", "frontend": "b1"}
    again = run(plan(root, [component("backend", "a2"), component("frontend", "b1")]), check=True)
    assert "nothing to switch" in again.stdout and len(fact(root)["history"]) == 2


def test_failed_gate_puts_back_links_and_data_and_starts_the_previous_release(root):
    (root / "releases" / "backend" / "a2" / "broken").touch()
    proc = run(plan(root, [component("backend", "a2"), component("frontend", "b1")]), check=False)
    assert "is not healthy" in proc.stdout and "Unit backend: failed" in proc.stdout and "rolled back to backend a1" in proc.stdout
    assert live(root, "backend") == "releases/backend/a1"
    assert (root / "data" / "schema").read_text() == "v1\n"  # the migration undone
    assert (root / "data.rolled-back" / "schema").read_text() == "v1\nmigrated\n"  # kept aside, never deleted
    assert (root / "events").read_text().splitlines() == [
        "stop backend a1", "start backend a2", "stop backend a2", "start backend a1"]
    assert len(fact(root)["history"]) == 1 and not (root / "releases" / ".switch.json").exists()


def test_failed_start_rolls_back_like_a_failed_gate(root):
    (root / "releases" / "backend" / "a2" / "nostart").touch()
    proc = run(plan(root, [component("backend", "a2"), component("frontend", "b1")]), check=False)
    assert "did not start" in proc.stdout, proc.stdout
    assert live(root, "backend") == "releases/backend/a1" and (root / "data" / "schema").read_text() == "v1\n"
    assert (root / "events").read_text().splitlines()[-1] == "start backend a1"


def test_a_failed_migrations_summary_names_its_error_not_a_traceback_line(root):
    traceback = ("printf 'Traceback (most recent call last):\\n  File \"/x/base.py\", line 1846, in _execute\\n"
                 "sqlite3.OperationalError: no such table: no_such_table\\n'; exit 1")
    proc = run(plan(root, [component("backend", "a2")], migrate=traceback), check=False)
    failed = next(line for line in proc.stdout.splitlines() if "FAILED" in line)
    assert "preparing the data for" in failed and "no such table: no_such_table" in failed, proc.stdout
    assert (root / "data" / "schema").read_text() == "v1\n" and live(root, "backend") == "releases/backend/a1"


def test_failure_headline():
    assert release_records.lib.failure_headline("") == "" and release_records.lib.failure_headline("one line\n") == "one line"
    assert release_records.lib.failure_headline("step x: Traceback\n  File y, line 3\n\nValueError: z\n") == "step x: Traceback ... ValueError: z"
    assert release_records.lib.failure_headline("a: T\n  File b\nE: c\n(exit 1)") == "a: T ... E: c (exit 1)"


def test_incomplete_release_is_never_switched_to(root):
    (root / "releases" / "backend" / "a2" / ".complete").unlink()
    proc = run(plan(root, [component("backend", "a2")]), check=False)
    assert "not complete" in proc.stdout and live(root, "backend") == "releases/backend/a1"
    assert not (root / "events").exists()


def killed_once_a2_started(root: Path) -> tuple[Path, Path]:
    """release-switch to backend a2 (slowed by its `slow` file), SIGKILLed (as systemd kills
    the unit) once its journal says started and a2 was started; (plan path, journal)."""
    slow = root / "releases" / "backend" / "a2" / "slow"
    slow.touch()
    path = plan(root, [component("backend", "a2"), component("frontend", "b1")])
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "run", str(path)], stdout=subprocess.PIPE, text=True)
    journal = root / "releases" / ".switch.json"
    deadline = time.monotonic() + 20
    while not (journal.exists() and json.loads(journal.read_text()).get("phase") == "started"
               and "start backend a2" in ((root / "events").read_text() if (root / "events").exists() else "")):
        assert time.monotonic() < deadline, "the switch never started a2"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    slow.unlink()
    return path, journal


def test_run_killed_mid_way_is_rolled_back_by_the_next_run_which_then_switches(root):
    path, journal = killed_once_a2_started(root)
    assert live(root, "backend") == "releases/backend/a2" and journal.exists()  # cut off half-way
    out = run(path, check=True).stdout
    assert "cut off at phase 'started': rolling it back first" in out, out
    # the undone switch is the earlier run's: this run's switch does not fail, and says so
    assert "the earlier switch rolled back to backend a1; this switch goes on" in out, out
    assert "FAILED" not in out and "the switch fails" not in out, out
    assert live(root, "backend") == "releases/backend/a2" and not journal.exists()
    assert (root / "data" / "schema").read_text() == "v1\nmigrated\n"  # restored, then migrated once
    assert (root / "events").read_text().splitlines() == [
        "stop backend a1", "start backend a2", "stop backend a2", "start backend a1", "stop backend a1", "start backend a2"]
    history = fact(root)["history"]
    assert [h["components"]["backend"] for h in history] == ["a1", "a2"]


def test_run_cut_off_after_its_gate_is_finished_not_rolled_back(root):
    path = plan(root, [component("backend", "a2"), component("frontend", "b1")])
    body = json.loads(path.read_text())
    (root / "backend").unlink()
    link(root, "backend", "a2")
    journal = {"plan": body, "before": {"backend": "a1", "frontend": "b1"}, "changes": ["backend"], "phase": "gated",
               "targets": {"backend": "releases/backend/a1", "frontend": "releases/frontend/b1"}, "backup": "", "tag": "t"}
    (root / "releases" / ".switch.json").write_text(json.dumps(journal))
    out = run(path, check=True).stdout
    assert "finishing it" in out and "nothing to switch" in out
    assert [h["components"]["backend"] for h in fact(root)["history"]] == ["a1", "a2"]
    assert not (root / "events").exists()  # nothing stopped or started again


def test_live_release_missing_from_the_history_is_recorded_as_cut_off(root):
    (root / "backend").unlink()
    link(root, "backend", "a2")  # a switch whose history line never came
    out = run(plan(root, [component("backend", "a2"), component("frontend", "b1")]), check=True).stdout
    assert "not in the history" in out
    last = fact(root)["history"][-1]
    assert last["action"] == "cut-off" and last["components"]["backend"] == "a2" and last["commit"] == "ca2"


def test_rollback_plan_restores_the_backup_taken_while_that_release_was_live(root):
    run(plan(root, [component("backend", "a2"), component("frontend", "b1")]), check=True)
    before = releases.app_id({"backend": "a1", "frontend": "b1"})
    out = run(plan(root, [component("backend", "a1"), component("frontend", "b1")], action="rollback", restore_for=before),
              check=True).stdout
    assert "restored from" in out and (root / "data" / "schema").read_text() == "v1\n"
    assert fact(root)["history"][-1]["action"] == "rollback"


def test_prunes_to_keep(root):
    for rid in ("a2", "a3", "a4"):
        if rid != "a2":
            make_release(root, "backend", rid)
        run(plan(root, [component("backend", rid), component("frontend", "b1")], keep=2), check=True)
    assert sorted(os.listdir(root / "releases" / "backend")) == ["a3", "a4"]


def test_http_check(tmp_path):
    script = load_script()
    ok, observed = script.http_check("http://127.0.0.1:9/")
    assert not ok and "Error" in observed


def test_plan_refuses_python_hooks():
    with pytest.raises(Exception, match="command lines"):
        switch_plan("/r", ["x"], [Component("x", "1", stop=lambda h: (True, ""))], None, Switch(), 3, "",
                    HostSwitch("u"))
