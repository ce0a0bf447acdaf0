"""The deploy lock's host script, run for real with python3 in a scratch state dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deploys.parts import deploy_lock
from deploys.parts.deploy_lock_host import __file__ as HOST_SCRIPT_PATH  # noqa: N812

pytestmark = []


def run(tmp_path, action, payload, env=None):
    proc = subprocess.run(
        [sys.executable, HOST_SCRIPT_PATH, action, json.dumps(payload)],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "INFRA_STATE_DIR": str(tmp_path), **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def payload(run_id, who="alice", pid=None, wait_s=0):
    return {"run_id": run_id, "deploy": "hello", "who": who, "from": "laptop", "commit": "abc", "dirty": False,
            "wait_s": wait_s, "controller_pid": pid}


def log(tmp_path):
    return [json.loads(line) for line in (tmp_path / "deploys.jsonl").read_text().splitlines()]


@pytest.fixture
def live_pid():
    """A process standing in for a run's connection: alive until the test kills it."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_take_finish_history(tmp_path):
    assert run(tmp_path, "take", payload("r1", pid=os.getpid())) == {"ok": True}
    assert json.loads((tmp_path / "lock" / "deploy.json").read_text())["holder"]["kind"] == "local"
    assert run(tmp_path, "take", payload("r1")) == {"ok": True}  # the same run again: re-entrant
    run(tmp_path, "finish", {"run_id": "r1", "deploy": "hello", "result": "success", "changed": 2, "failed": 0})
    assert not (tmp_path / "lock" / "deploy.json").exists()
    assert [r["event"] for r in log(tmp_path)] == ["start", "finish"]
    (history,) = run(tmp_path, "history", {"deploy": "hello"})["runs"]
    assert (history["who"], history["result"], history["changed"]) == ("alice", "success", 2)
    assert run(tmp_path, "history", {"deploy": "other"})["runs"] == []


def test_a_live_holder_blocks_and_is_named(tmp_path, live_pid):
    assert run(tmp_path, "take", payload("r1", who="bob", pid=live_pid.pid))["ok"]
    busy = run(tmp_path, "take", payload("r2", pid=os.getpid(), wait_s=1))
    assert busy == {"ok": False, "holder": {"run_id": "r1", "deploy": "hello", "who": "bob", "from": "laptop",
                                            "since": busy["holder"]["since"], "commit": "abc", "dirty": False}}


def test_a_dead_holder_is_taken_over_and_recorded_as_interrupted(tmp_path, live_pid):
    assert run(tmp_path, "take", payload("r1", who="bob", pid=live_pid.pid))["ok"]
    live_pid.kill()
    live_pid.wait()
    result = run(tmp_path, "take", payload("r2", pid=os.getpid()))
    assert result["ok"] and result["stale"]["who"] == "bob"
    assert [r["event"] for r in log(tmp_path)] == ["start", "interrupted", "start"]
    runs = run(tmp_path, "history", {})["runs"]
    assert [(r["run_id"], r["result"]) for r in runs] == [("r1", "interrupted"), ("r2", "running or interrupted")]


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    (tmp_path / "lock").mkdir()
    record = {**payload("r1"), "holder": {"kind": "local", "pid": os.getpid(), "start": 1, "boot": "x"}}
    (tmp_path / "lock" / "deploy.json").write_text(json.dumps(record))
    assert run(tmp_path, "take", payload("r2", pid=os.getpid()))["stale"]["run_id"] == "r1"


def test_controller_command_and_messages():
    command = str(deploy_lock.host_command("take", {"run_id": "x"}).get_raw_value())
    assert command.startswith("python3 -c ") and command.endswith(" take '{\"run_id\": \"x\"}'")
    holder = {"who": "bob", "from": "laptop", "since": "2026-12-01T10:00:00Z", "deploy": "music",
              "commit": "abc", "dirty": True}
    assert deploy_lock.describe_holder(holder) == (
        "bob from laptop since 2026-12-01T10:00:00Z, deploy music, commit abc (dirty)")
    commit, dirty = deploy_lock.git_revision()
    assert commit and len(commit) == 12 and isinstance(dirty, bool)
