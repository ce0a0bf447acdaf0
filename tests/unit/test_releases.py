"""deploys/parts/releases.py and facts/releases.py without a host: the facts' scripts run
on a temporary tree, the switch runs against a fake host that executes commands locally."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from deploys.errors import ConfigError
from deploys.parts import releases
from deploys.parts.releases import Component, DataSteps, Switch, app_id, prune_plan, report_lines, rollback_target
from facts.procs import INTERPRETER_SCRIPT, GitRevision, Interpreter
from facts.releases import RELEASES_SCRIPT, Releases

NAMES = ["backend", "frontend"]


def fact(root: Path) -> dict:
    out = subprocess.run(["python3", "-c", RELEASES_SCRIPT, "state", str(root), " ".join(NAMES)], capture_output=True, text=True, check=True)
    return Releases().process(out.stdout.splitlines())


def make_release(root: Path, name: str, rid: str, complete: bool = True) -> Path:
    path = root / "releases" / name / rid
    path.mkdir(parents=True)
    (path / "release.json").write_text(json.dumps({"id": rid}))
    if complete:
        (path / ".complete").touch()
    return path


def link(root: Path, name: str, rid: str) -> None:
    target = root / name
    if target.is_symlink():
        target.unlink()
    target.symlink_to(f"releases/{name}/{rid}")


def history(root: Path, *entries: dict) -> None:
    (root / "releases").mkdir(parents=True, exist_ok=True)
    with (root / "releases" / "history.jsonl").open("a") as handle:
        for entry in entries:
            handle.write(json.dumps(entry) + "\n")


def entry(backend: str, frontend: str, **extra) -> dict:
    comps = {"backend": backend, "frontend": frontend}
    return {"id": app_id(comps), "components": comps, "at": "2026-12-01T10:00:00+0000", "action": "deploy", **extra}


def test_fact_reads_links_releases_history_and_a_legacy_directory(tmp_path):
    assert fact(tmp_path) == {"components": {n: {"current": None, "legacy_dir": False, "releases": {}} for n in NAMES}, "history": []}
    make_release(tmp_path, "backend", "b1")
    make_release(tmp_path, "backend", "b2", complete=False)
    link(tmp_path, "backend", "b1")
    (tmp_path / "frontend").mkdir()  # an install from before releases
    history(tmp_path, entry("b1", "f1"))
    (tmp_path / "releases" / "history.jsonl").open("a").write("not json\n")
    st = fact(tmp_path)
    backend = st["components"]["backend"]
    assert backend["current"] == "b1" and backend["current_complete"] is True
    assert {k: v["complete"] for k, v in backend["releases"].items()} == {"b1": True, "b2": False}
    assert st["components"]["frontend"]["legacy_dir"] is True
    assert [e["components"]["backend"] for e in st["history"]] == ["b1"]


def test_release_id_is_stable_and_content_based():
    assert releases.release_id("a", {"x": 1, "y": 2}) == releases.release_id("a", {"y": 2, "x": 1})
    assert releases.release_id("a", 1) != releases.release_id("a", 2)
    assert len(app_id({"backend": "b", "frontend": "f"})) == 12


def test_prune_keeps_the_live_release_and_the_last_n(tmp_path):
    for rid in ("b1", "b2", "b3", "b4"):
        make_release(tmp_path, "backend", rid)
    make_release(tmp_path, "backend", "b5", complete=False)  # a failed build
    for rid in ("f1", "f2"):
        make_release(tmp_path, "frontend", rid)
    history(tmp_path, entry("b1", "f1"), entry("b2", "f1"), entry("b3", "f2"), entry("b4", "f2"))
    link(tmp_path, "backend", "b4")
    link(tmp_path, "frontend", "f2")
    plan = prune_plan(fact(tmp_path), NAMES, keep=2)
    assert plan == {"backend": ["b1", "b2", "b5"], "frontend": ["f1"]}
    assert prune_plan(fact(tmp_path), NAMES, keep=4) == {"backend": ["b5"], "frontend": []}


def test_rollback_target_is_the_previous_kept_release_or_the_named_one(tmp_path):
    for b in ("b1", "b2", "b3"):
        make_release(tmp_path, "backend", b)
    make_release(tmp_path, "frontend", "f1")
    history(tmp_path, entry("b1", "f1"), entry("b2", "f1"), entry("b3", "f1"))
    link(tmp_path, "backend", "b3")
    link(tmp_path, "frontend", "f1")
    st = fact(tmp_path)
    assert rollback_target(st, NAMES, None)["components"]["backend"] == "b2"
    first = app_id({"backend": "b1", "frontend": "f1"})
    assert rollback_target(st, NAMES, first[:6])["id"] == first
    with pytest.raises(ConfigError, match="no single kept release matches 'zzz'"):
        rollback_target(st, NAMES, "zzz")
    # a pruned release is no choice
    (tmp_path / "releases" / "backend" / "b2" / ".complete").unlink()
    assert rollback_target(fact(tmp_path), NAMES, None)["components"]["backend"] == "b1"


def test_rollback_with_nothing_before_says_so(tmp_path):
    make_release(tmp_path, "backend", "b1")
    make_release(tmp_path, "frontend", "f1")
    history(tmp_path, entry("b1", "f1"))
    link(tmp_path, "backend", "b1")
    link(tmp_path, "frontend", "f1")
    with pytest.raises(ConfigError, match="no earlier release to go back to"):
        rollback_target(fact(tmp_path), NAMES, None)


def test_report_marks_the_live_release_commit_and_pruned_ones(tmp_path):
    make_release(tmp_path, "backend", "b2")
    make_release(tmp_path, "frontend", "f1")
    history(tmp_path, entry("b1", "f1", commit="abc123def4567890", dirty=True), entry("b2", "f1", commit="fedcba9876543210", by="jo@pc"))
    link(tmp_path, "backend", "b2")
    link(tmp_path, "frontend", "f1")
    lines = report_lines(fact(tmp_path), NAMES)
    assert lines[1].startswith(" * ") and "commit fedcba987654  by jo@pc" in lines[1]
    assert "commit abc123def456 (dirty)" in lines[2] and lines[2].endswith("[pruned]")
    assert report_lines(fact(tmp_path / "none"), NAMES)[1].strip() == "none yet (deploy first)"


class LocalHost:
    """Enough of pyinfra's Host for _switch: shell commands run here, facts via the scripts."""

    def __init__(self, root: Path):
        self.root, self.logs = root, []

    def run_shell_command(self, command):
        out = subprocess.run(["sh", "-c", command.get_raw_value()], capture_output=True, text=True)

        class Output:
            stdout_lines = out.stdout.splitlines()
            stderr_lines = out.stderr.splitlines()

        return out.returncode == 0, Output()

    def get_fact(self, cls, **kwargs):
        return fact(self.root)

    def log(self, message):
        self.logs.append(message)


def switch_fixture(tmp_path, fail_at: str | None):
    for name, rid in (("backend", "b1"), ("frontend", "f1"), ("backend", "b2")):
        make_release(tmp_path, name, rid)
    link(tmp_path, "backend", "b1")
    link(tmp_path, "frontend", "f1")
    history(tmp_path, entry("b1", "f1"))
    db = tmp_path / "db"
    db.write_text("v1")
    calls = []

    def hook(what):
        def run(host_):  # fails the first time only (the previous release then starts)
            calls.append(what)
            failed = fail_at == what and calls.count(what) == 1
            return not failed, f"{what} {'failed' if failed else 'ok'}"
        return run

    def backup(host_, tag):
        (tmp_path / f"backup-{tag}").write_text(db.read_text())
        return True, str(tmp_path / f"backup-{tag}")

    def restore(host_, path):
        db.write_text(Path(path).read_text())
        calls.append("restore")
        return True, ""

    def migrate(host_):
        db.write_text("v2")
        calls.append("migrate")
        return fail_at != "migrate", "boom" if fail_at == "migrate" else ""

    comps = [
        Component("backend", "b2", stop=hook("stop backend"), start=hook("start backend"), gate=hook("gate backend")),
        Component("frontend", "f1", stop=hook("stop frontend"), start=hook("start frontend"), gate=hook("gate frontend")),
    ]
    host_ = LocalHost(tmp_path)
    ok = releases._switch(None, host_, str(tmp_path), NAMES, comps, DataSteps(backup, restore, migrate), Switch("deploy", {"commit": "c1"}), 3, None)
    return ok, calls, db, host_


def test_switch_restarts_only_the_changed_component_and_records_history(tmp_path):
    ok, calls, db, host_ = switch_fixture(tmp_path, None)
    assert ok, host_.logs
    assert calls == ["stop backend", "migrate", "start backend", "gate backend"]  # the frontend is left alone
    assert (tmp_path / "backend").readlink() == Path("releases/backend/b2") and db.read_text() == "v2"
    last = fact(tmp_path)["history"][-1]
    assert last["components"] == {"backend": "b2", "frontend": "f1"} and last["commit"] == "c1" and last["from"]


@pytest.mark.parametrize("fail_at", ["migrate", "start backend", "gate backend"])
def test_a_failure_after_the_backup_puts_back_the_release_and_the_data(tmp_path, fail_at):
    ok, calls, db, host_ = switch_fixture(tmp_path, fail_at)
    assert not ok
    assert (tmp_path / "backend").readlink() == Path("releases/backend/b1")
    assert db.read_text() == "v1" and "restore" in calls
    assert calls[-2:] == ["start backend", "gate backend"]  # the previous release, started and gated
    assert any("rolled back to backend b1" in line for line in host_.logs)
    assert len(fact(tmp_path)["history"]) == 1  # nothing recorded


def test_an_incomplete_release_is_never_switched_to(tmp_path):
    make_release(tmp_path, "backend", "b1")
    make_release(tmp_path, "backend", "b2", complete=False)
    link(tmp_path, "backend", "b1")
    host_ = LocalHost(tmp_path)
    assert not releases._switch(None, host_, str(tmp_path), ["backend"], [Component("backend", "b2")], None, Switch(), 3, None)
    assert (tmp_path / "backend").readlink() == Path("releases/backend/b1")
    assert "not complete" in host_.logs[0]


def test_git_revision_and_interpreter_parsing(tmp_path):
    assert GitRevision().process(["commit=abc", "dirty=yes"]) == {"commit": "abc", "dirty": True}
    assert GitRevision().process(["commit="]) == {"commit": None, "dirty": None}
    (tmp_path / ".python-version").write_text("3.13\n")
    out = subprocess.run(["sh", "-c", INTERPRETER_SCRIPT, "x", "python3", str(tmp_path)], capture_output=True, text=True)
    info = Interpreter().process(out.stdout.splitlines())
    assert info["pinned"] == "3.13" and info["source"] == "knob" and info["version"].startswith("3.")
    out = subprocess.run(["sh", "-c", INTERPRETER_SCRIPT, "x", "no-such-python", str(tmp_path)], capture_output=True, text=True)
    assert Interpreter().process(out.stdout.splitlines())["path"] is None


def test_make_targets_pass_the_release_knobs():
    """`make -n`: the pyinfra command each target would run (nothing runs)."""
    import subprocess

    def planned(*args):
        out = subprocess.run(["make", "-n", *args], capture_output=True, text=True, timeout=60)
        return out.returncode, out.stdout + out.stderr

    code, out = planned("rollback", "DEPLOY=youtube", "TO=0123")
    assert code == 0 and "--data release_action=rollback --data 'release_to=\"0123\"'" in out  # a string, not 123
    code, out = planned("releases", "DEPLOY=youtube")
    assert code == 0 and "--data release_action=releases" in out
    assert subprocess.run(["make", "rollback", "DEPLOY=hello"], capture_output=True, timeout=60).returncode == 2
    assert subprocess.run(["make", "rollback", "DEPLOY=youtube", "TO=a;b"], capture_output=True,
                          timeout=60).returncode == 2

