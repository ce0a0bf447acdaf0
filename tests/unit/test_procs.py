"""facts/procs.py and deploys/parts/procs.py: the host-side scripts run here against real
processes (PID files: running, missing, stale, reused; ports; graceful and forced stop),
and the decisions the operations take from their output."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploys.parts.procs import (
    STOP_SCRIPT,
    ProcSpec,
    describe_pid_process,
    foreign_holders,
    plan_start,
    plan_stop,
    port_problem,
    start_command,
)
from facts.procs import (
    ALEMBIC_SCRIPT,
    DIGEST_SCRIPT,
    MARKER_KEY,
    PROCS_SCRIPT,
    Identity,
    MissingPaths,
    TextFile,
    at_head,
    parse_identity,
    parse_user_units,
    procs_spec,
)

# Unique per run: other checkouts may run this suite at the same time on one machine.
FAMILY = f"test-instance-{os.getpid()}:/tmp/x:web"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_procs(procs: list[dict]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROCS_SCRIPT, procs_spec(procs)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def spawn(marker: str | None, code: str, cwd: Path | None = None) -> subprocess.Popen:
    env = {**os.environ}
    if marker:
        env[MARKER_KEY] = marker
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=cwd, start_new_session=True)


LISTEN = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port})); s.listen(); time.sleep(60)
"""


@pytest.fixture
def children():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def wait_listening(port: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def entry(tmp_path: Path, port: int | None = None, mode: str = "pidfile") -> dict:
    return {
        "id": "web",
        "marker": f"{FAMILY}:{mode}",
        "pidfile": str(tmp_path / "web.pid") if mode == "pidfile" else None,
        "port": port,
        "family": FAMILY + ":",
    }


def test_states_running_missing_stale_reused_stopped(tmp_path, children):
    port = free_port()
    pidfile = tmp_path / "web.pid"
    assert run_procs([entry(tmp_path, port)])["web"]["state"] == "stopped"

    proc = spawn(f"{FAMILY}:pidfile", LISTEN.format(port=port))
    children.append(proc)
    wait_listening(port)
    pidfile.write_text(f"{proc.pid}\n")
    info = run_procs([entry(tmp_path, port)])["web"]
    assert info["state"] == "running" and info["pidfile_pid"] == proc.pid and info["tops"] == [proc.pid]
    assert info["port"]["listening"] and info["port"]["holders"][0]["pid"] == proc.pid
    assert info["port"]["holders"][0]["marker"] == f"{FAMILY}:pidfile"

    pidfile.unlink()
    info = run_procs([entry(tmp_path, port)])["web"]
    assert info["state"] == "missing-pidfile" and info["tops"] == [proc.pid]

    other = spawn(None, "import time; time.sleep(60)")  # an unrelated program
    children.append(other)
    pidfile.write_text(str(other.pid))
    info = run_procs([entry(tmp_path, port)])["web"]
    assert info["state"] == "reused" and info["pidfile_pid"] == other.pid
    assert "time.sleep(60)" in info["pidfile_cmdline"]
    assert info["tops"] == [proc.pid]  # the real instance is still found by its marker

    proc.kill()
    proc.wait(5)
    pidfile.write_text(str(proc.pid))
    info = run_procs([entry(tmp_path, port)])["web"]
    assert info["state"] == "stale" and info["tops"] == [] and not info["port"]["listening"]

    pidfile.write_text("garbage\n")
    assert run_procs([entry(tmp_path, port)])["web"]["state"] == "stale"


def test_foreign_listener_and_other_mode_are_told_apart(tmp_path, children):
    port = free_port()
    foreign = spawn(None, LISTEN.format(port=port))
    children.append(foreign)
    wait_listening(port)
    info = run_procs([entry(tmp_path, port)])["web"]
    spec = ProcSpec("web", "x", "/", "/tmp/log", str(tmp_path / "web.pid"), FAMILY, "web.service", port=port)
    assert foreign_holders(info, FAMILY)[0]["pid"] == foreign.pid
    assert f"port {port} (web) is in use by" in port_problem(spec, info)
    foreign.kill()
    foreign.wait(5)

    same_instance_other_mode = spawn(f"{FAMILY}:systemd", LISTEN.format(port=port))
    children.append(same_instance_other_mode)
    wait_listening(port)
    info = run_procs([entry(tmp_path, port)])["web"]
    assert info["other_markers"] == [f"{FAMILY}:systemd"]
    assert port_problem(spec, info) is None  # ours (other mode): stopped by the switch, not refused


def test_children_share_the_marker_and_only_the_root_is_a_top(tmp_path, children):
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    parent = spawn(f"{FAMILY}:pidfile", code)
    children.append(parent)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        info = run_procs([entry(tmp_path)])["web"]
        if len(info["pids"]) == 2:
            break
        time.sleep(0.05)
    assert len(info["pids"]) == 2 and info["tops"] == [parent.pid]
    assert info["pgids"][str(parent.pid)] == parent.pid
    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait(5)


def run_stop(marker: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", STOP_SCRIPT, MARKER_KEY, marker, str(timeout)], capture_output=True, text=True)


def test_stop_is_graceful_then_forced_and_never_touches_others(children):
    marker = f"{FAMILY}:pidfile"
    bystander = spawn(None, "import time; time.sleep(60)")
    children.append(bystander)
    polite = spawn(marker, "import time; time.sleep(60)")
    children.append(polite)
    time.sleep(0.2)
    result = run_stop(marker, 5)
    assert result.returncode == 0 and "with SIGTERM" in result.stdout, result
    assert polite.wait(5) == -signal.SIGTERM

    stubborn = spawn(marker, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)")
    children.append(stubborn)
    time.sleep(0.3)
    started = time.monotonic()
    result = run_stop(marker, 1)
    assert result.returncode == 0 and "killed with SIGKILL" in result.stdout, result
    assert 1 <= time.monotonic() - started < 5
    assert stubborn.wait(5) == -signal.SIGKILL

    assert run_stop(marker, 1).stdout.strip() == "not running"
    assert bystander.poll() is None


def test_start_command_writes_the_pid_of_the_command_itself(tmp_path):
    port = free_port()
    from deploys.parts.service import render_env_file

    (tmp_path / ".env").write_text(render_env_file({"GREETING": 'a "quoted" $value `x`'}).unmask())
    spec = ProcSpec(
        id="web",
        command=f"{shlex.quote(sys.executable)} -c {shlex.quote(LISTEN.format(port=port))}",
        cwd=str(tmp_path),
        log=str(tmp_path / "web.log"),
        pidfile=str(tmp_path / "pids" / "web.pid"),
        family=FAMILY,
        unit="web.service",
        port=port,
        env_file=str(tmp_path / ".env"),
    )
    subprocess.run(["sh", "-c", start_command(spec)], check=True, timeout=10)
    wait_listening(port)
    pid = int((tmp_path / "pids" / "web.pid").read_text())
    try:
        info = run_procs([entry(tmp_path / "pids", port)])["web"]
        assert info["state"] == "running" and info["tops"] == [pid]
        assert os.getpgid(pid) == pid  # own session: stop signals the whole group
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b'GREETING=a "quoted" $value `x`' in environ
        assert oct(os.stat(spec.log).st_mode & 0o777) == "0o600"
    finally:
        run_stop(spec.marker("pidfile"), 2)
    assert run_procs([entry(tmp_path / "pids", port)])["web"]["tops"] == []


# ----------------------------------------------------------------------------- decisions


def info(state, pidfile_pid=None, tops=(), exists=True, cmdline=None):
    return {"state": state, "pidfile_pid": pidfile_pid, "tops": list(tops), "pidfile_exists": exists, "pidfile_cmdline": cmdline}


@pytest.mark.parametrize(
    ("fact", "action", "words"),
    [
        (info("running", 10, [10]), "noop", "already running (pid 10)"),
        (info("missing-pidfile", None, [10], exists=False), "adopt", "without its PID file: PID file restored"),
        (info("stale", 10), "start", "stale PID file (pid 10 is gone)"),
        (info("reused", 10, cmdline="sleep 99"), "start", "belongs to another program (sleep 99)"),
        (info("reused", 10, [12], cmdline="sleep 99"), "adopt", "running (pid 12): PID file now names it"),
        (info("stopped", exists=False), "start", ""),
    ],
)
def test_plan_start(fact, action, words):
    got, messages = plan_start(fact)
    assert got == action
    assert words in " ".join(messages)


def test_plan_stop():
    assert plan_stop(info("running", 10, [10])) == (True, True, [])
    assert plan_stop(info("stopped", exists=False)) == (False, False, ["not running; nothing to stop"])
    running, remove, messages = plan_stop(info("stale", 10))
    assert (running, remove) == (False, True) and "stale PID file" in messages[0]
    running, remove, messages = plan_stop(info("reused", 10, cmdline="vim"))
    assert (running, remove) == (False, True) and "not signalled" in messages[0]
    running, remove, _ = plan_stop(info("missing-pidfile", None, [10], exists=False))
    assert (running, remove) == (True, False)


def test_status_lines_name_the_problem():
    spec = ProcSpec("web", "x", "/", "/l", "/p", FAMILY, "u")
    assert describe_pid_process(spec, info("running", 10, [10])) == "running, pid 10 (PID file ok)"
    assert "MISSING" in describe_pid_process(spec, info("missing-pidfile", None, [10], exists=False))
    assert "is gone" in describe_pid_process(spec, info("stale", 10))
    assert "is now vim" in describe_pid_process(spec, info("reused", 10, cmdline="vim"))


# ----------------------------------------------------------------------------- other facts


def test_user_units_parsing():
    output = [
        "manager=running",
        "Id=a.service", "LoadState=loaded", "ActiveState=active", "SubState=running", "MainPID=42",
        "UnitFileState=enabled", "NRestarts=2", "FragmentPath=/h/.config/systemd/user/a.service", "",
        "Id=b.service", "LoadState=not-found", "ActiveState=inactive", "SubState=dead", "MainPID=0",
        "UnitFileState=", "NRestarts=[not set]",
    ]
    parsed = parse_user_units(output)
    assert parsed["manager"] == "running"
    assert parsed["units"]["a.service"]["MainPID"] == 42 and parsed["units"]["a.service"]["NRestarts"] == 2
    assert parsed["units"]["b.service"]["ActiveState"] == "inactive" and parsed["units"]["b.service"]["NRestarts"] == 0
    assert parse_user_units(["manager=offline"]) == {"manager": "offline", "units": {}}


def test_identity_and_small_facts_on_this_machine(tmp_path):
    out = subprocess.run(["sh", "-c", Identity().command()], capture_output=True, text=True, check=True).stdout
    ident = parse_identity(out.splitlines())
    assert ident["uid"] == os.getuid() and ident["home"] == os.environ["HOME"] and ident["user"]
    (tmp_path / "f").write_text("abc\n")
    cmd = MissingPaths().command(json.dumps([str(tmp_path / "f"), str(tmp_path / "nope dir")]))
    assert subprocess.run(["sh", "-c", cmd], capture_output=True, text=True).stdout.splitlines() == [str(tmp_path / "nope dir")]
    text = subprocess.run(["sh", "-c", str(TextFile().command(str(tmp_path / "f")).get_raw_value())], capture_output=True, text=True).stdout
    assert TextFile().process(text.splitlines()) == "abc"
    assert TextFile().process([]) is None


def digest_of(base: Path, includes=(), excludes=()) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", DIGEST_SCRIPT, str(base), json.dumps(list(includes)), json.dumps(list(excludes))],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out)


def test_tree_digest_changes_with_sources_not_with_excluded_or_timestamps(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "page.tsx").write_text("v1")
    (tmp_path / "package-lock.json").write_text("{}")
    (tmp_path / "node_modules" / "x").mkdir(parents=True)
    (tmp_path / "node_modules" / "x" / "index.js").write_text("dep")
    excludes = ["node_modules", ".next", ".env*"]
    first = digest_of(tmp_path, excludes=excludes)
    assert first["files"] == 2
    (tmp_path / "node_modules" / "x" / "index.js").write_text("other dep")
    (tmp_path / ".env.local").write_text("SECRET=1")
    os.utime(tmp_path / "src" / "page.tsx", (0, 0))
    assert digest_of(tmp_path, excludes=excludes)["digest"] == first["digest"]
    (tmp_path / "package-lock.json").write_text('{"lock": 2}')
    assert digest_of(tmp_path, excludes=excludes)["digest"] != first["digest"]
    partial = digest_of(tmp_path, includes=["src", "alembic.ini"])
    assert partial["missing"] == ["alembic.ini"] and partial["files"] == 1
    assert digest_of(tmp_path / "absent")["digest"] is None


def test_alembic_state_reads_without_creating_the_database(tmp_path):
    import sqlite3

    db = tmp_path / "prod.db"
    run = lambda: json.loads(  # noqa: E731
        subprocess.run([sys.executable, "-c", ALEMBIC_SCRIPT, str(db)], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    )
    state = run()
    assert state["db_exists"] is False and not db.exists()
    con = sqlite3.connect(db)
    con.execute("create table alembic_version (version_num varchar(32))")
    con.execute("insert into alembic_version values ('0001')")
    con.commit()
    con.close()
    state = run()
    assert state["current"] == ["0001"] and "alembic_version" in state["tables"]
    assert at_head({**state, "heads": ["0001"]}) is True
    assert at_head({**state, "heads": ["0002"]}) is False
    assert at_head({**state, "heads": None}) is None


def test_start_rotates_a_log_over_its_cap_and_recreates_the_pid_directory(tmp_path):
    log = tmp_path / "web.log"
    log.write_text("x" * 2000)
    spec = ProcSpec(
        id="web", command="true", cwd=str(tmp_path), log=str(log), pidfile=str(tmp_path / "pids" / "web.pid"),
        family=FAMILY, unit="web.service", log_max_bytes=1000,
    )
    subprocess.run(["sh", "-c", start_command(spec)], check=True, timeout=10)
    deadline = time.monotonic() + 5
    while not (tmp_path / "pids" / "web.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "web.log.1").read_text() == "x" * 2000
    assert not log.exists() or log.stat().st_size < 1000
    # under the cap: left alone
    (tmp_path / "web.log.1").unlink()
    log.write_text("small")
    subprocess.run(["sh", "-c", start_command(spec)], check=True, timeout=10)
    time.sleep(0.3)
    assert not (tmp_path / "web.log.1").exists() and log.read_text().startswith("small")
