"""The deploy lock's host script, run for real with python3 in a scratch state dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploys.parts import deploy_lock
from deploys.parts.deploy_lock_host import __file__ as HOST_SCRIPT_PATH  # noqa: N812
from facts import prefetch_host

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


@pytest.fixture
def local_host(tmp_path, monkeypatch):
    """@local with its own state dir (lock, audit log, saved fact list)."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all
    from pyinfra.context import ctx_host, ctx_state

    from facts import prefetch

    monkeypatch.setenv("INFRA_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("INFRA_FACT_CACHE", raising=False)
    inventory = Inventory((["@local"], {}))
    state = State(inventory=inventory, config=Config())
    connect_all(state)
    target = inventory.get_host("@local")
    assert prefetch.install()
    commands = []
    original = prefetch._ORIGINAL["run_shell_command"]
    monkeypatch.setitem(prefetch._ORIGINAL, "run_shell_command",
                        lambda *a, **k: commands.append(prefetch.command_text(a[1])) or original(*a, **k))
    with ctx_state.use(state), ctx_host.use(target):
        yield state, target, commands
    prefetch.forget(target)


def saved_facts(tmp_path, *commands):
    """The fact list a last run of `unit` left on the host."""
    script = str(Path(prefetch_host.__file__))
    subprocess.run([sys.executable, script, "save", "unit"], input=json.dumps({"facts": list(commands)}), text=True,
                   check=True, capture_output=True, env={**os.environ, "INFRA_STATE_DIR": str(tmp_path)})


def test_take_and_prefetch_is_one_command_and_seeds_the_cache(tmp_path, local_host):
    from facts import prefetch

    state, target, commands = local_host
    marker = tmp_path / "prefetched"
    saved_facts(tmp_path, f"touch {marker}; echo seeded")
    result = deploy_lock.take_and_prefetch(target, "unit", deploy_lock.start_payload("unit", 0, True))
    assert result == {"ok": True} and len(commands) == 1
    assert json.loads((tmp_path / "lock" / "deploy.json").read_text())["run_id"] == deploy_lock.RUN_ID
    assert "refused_status" not in json.loads((tmp_path / "lock" / "deploy.json").read_text())
    assert marker.exists()  # the facts ran under the lock, in the same command
    cache = prefetch.cache_for(target)
    assert cache.values[(f"touch {marker}; echo seeded", cache.base)] == ["seeded"]
    assert cache.clock is not None  # the host's clock came with it
    assert prefetch.prefetch_host(state, target, "unit") is cache and len(commands) == 1  # guarded's call: no command
    assert [r["event"] for r in log(tmp_path)] == ["start"]


def test_take_and_prefetch_refused_reads_no_fact(tmp_path, local_host, live_pid):
    from facts import prefetch

    state, target, commands = local_host
    marker = tmp_path / "prefetched"
    saved_facts(tmp_path, f"touch {marker}; echo seeded")
    assert run(tmp_path, "take", payload("other", who="bob", pid=live_pid.pid))["ok"]
    result = deploy_lock.take_and_prefetch(target, "unit", deploy_lock.start_payload("unit", 0, True))
    assert not result["ok"] and result["holder"]["who"] == "bob" and len(commands) == 1
    assert not marker.exists() and prefetch.cache_for(target) is None


def test_a_refused_take_exits_with_the_status_asked_for(tmp_path, live_pid):
    assert run(tmp_path, "take", payload("r1", who="bob", pid=live_pid.pid))["ok"]
    proc = subprocess.run([sys.executable, HOST_SCRIPT_PATH, "take", json.dumps({**payload("r2"), "refused_status": 3})],
                          capture_output=True, text=True, timeout=30, env={**os.environ, "INFRA_STATE_DIR": str(tmp_path)})
    assert proc.returncode == 3 and json.loads(proc.stdout)["ok"] is False


def test_the_run_records_of_all_hosts_go_out_at_once(local_host, monkeypatch):
    """Each record (and unlock) is a round trip: the hosts' records overlap, as pyinfra's
    hosts do, rather than waiting one after the other."""
    import gevent

    events, payloads = [], []

    def host_script(target, action, payload_):
        events.append(("sent", target))
        gevent.sleep(0)  # the round trip: other greenlets run meanwhile
        events.append(("answered", target))
        payloads.append((target, action, payload_["result"]))
        return {"ok": True}

    monkeypatch.setattr(deploy_lock, "run_host_script", host_script)
    monkeypatch.setattr(deploy_lock._RunRecorder, "hosts", {"h1": "hello", "h2": "hello", "h3": "hello"})
    deploy_lock._RunRecorder.record_all(["h1", "h2", "h3"])
    assert [e for e, _ in events] == ["sent"] * 3 + ["answered"] * 3
    assert sorted(payloads) == [(h, "finish", "success") for h in ("h1", "h2", "h3")]
    assert deploy_lock._RunRecorder.hosts == {}


def test_the_revision_is_read_once_for_all_hosts(monkeypatch):
    """Hosts load in greenlets: those asking while git runs wait for its answer rather than
    each starting git again."""
    import gevent

    calls = []

    def git(args, **kwargs):
        calls.append(args[3])
        gevent.sleep(0.01)  # git running: the other hosts' greenlets ask meanwhile
        return subprocess.CompletedProcess(args, 0, stdout="0123456789ab\n" if args[3] == "rev-parse" else "")

    monkeypatch.setattr(deploy_lock.subprocess, "run", git)
    deploy_lock._git_revision.cache_clear()
    try:
        answers = [g.get() for g in gevent.joinall([gevent.spawn(deploy_lock.git_revision) for _ in range(5)])]
    finally:
        deploy_lock._git_revision.cache_clear()
    assert answers == [("0123456789ab", False)] * 5 and calls == ["rev-parse", "status"]
