"""youtube's release switch on the host (youtube_switch_on_host, issue 15 item 4/5): when it
is used (lingering on, a user manager answering), the plan release-switch runs (hooks as
command lines), and those hooks run for real in a temporary home: the database backup,
restore and the rollback's "does the database match this release" check; the PID-file
start inside a scope of its own (fake systemd-run on PATH: it records, then runs the
command); the stop."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploys import youtube
from deploys.parts import releases
from tests.unit.test_youtube_deploy import data as yt_data


class FakeHost:
    def __init__(self, manager: str | None):
        self.manager = manager

    def get_fact(self, fact, **kwargs):
        return {"manager": self.manager, "units": {}}


def make_ctx(home: str, linger: bool = True, mode: str = "pidfile", **overrides):
    d = yt_data(**overrides)
    layout = youtube.Layout.from_data(d, home)
    ctx = youtube.Context(d, {"linger": linger, "home": home, "user": "jo"}, layout, youtube.proc_specs(d, layout))
    ctx.mode = mode
    return ctx


@pytest.mark.parametrize("on, linger, manager, used", [
    (True, True, "running", True),
    (True, True, "degraded", True),
    (True, False, "running", False),  # no lingering: the unit would die with the session
    (True, True, "offline", False),
    (False, True, "running", False),  # youtube_switch_on_host = False
])
def test_the_switch_runs_on_the_host_only_with_lingering_and_a_manager(monkeypatch, on, linger, manager, used):
    monkeypatch.setattr(youtube, "host", FakeHost(manager))
    on_host = youtube.switch_on_host(make_ctx("/home/jo", linger, youtube_switch_on_host=on))
    assert (on_host is not None) is used
    if used:
        assert on_host.unit == "aqa-youtube-prod-release" and on_host.scope == "user"
        assert on_host.log == "/home/jo/aqa-youtube-assistant-prod/release-switch.log"
        assert on_host.script == "/home/jo/.local/state/infra/bin/release-switch"  # the user's own: no root
        assert on_host.gate_timeout_s == 60 + 60  # time to listen, then the health check's


def test_a_bad_script_path_is_a_config_problem():
    with pytest.raises(Exception, match="youtube_switch_script"):
        youtube.check_config(yt_data(youtube_switch_script="~/my scripts/release-switch"))


@pytest.mark.parametrize("mode", ["pidfile", "systemd"])
def test_the_plan_holds_command_lines_for_every_hook(mode):
    ctx = make_ctx("/home/jo", mode=mode)
    script = "/home/jo/.local/state/infra/bin/release-switch"
    comps = youtube.host_switch_components(ctx, {"backend": "b2", "frontend": "f1"}, True, script)
    on_host = releases.HostSwitch("aqa-youtube-prod-release", scope="user", log="/home/jo/p/release-switch.log", script=script)
    plan = releases.switch_plan(ctx.layout.prod, youtube.COMPONENTS, comps, youtube.host_data_steps(ctx, migrate=True),
                                releases.Switch("deploy", {"commit": "c0ffee"}), 3, youtube.venv_cleanup_command(ctx.layout),
                                on_host)
    json.dumps(plan)  # what the host reads
    backend = plan["components"][0]
    assert backend["name"] == "backend" and backend["rid"] == "b2"
    assert backend["gate"] == f"python3 {script} http-check http://127.0.0.1:8001/api/health"
    assert backend["stop"].startswith("python3 -c ") and "stop aqa-youtube-prod-backend.service" in backend["stop"]
    if mode == "pidfile":
        assert backend["start"].count("systemd-run --user --scope") == 1 and "aqa-youtube-prod-backend-pid-" in backend["start"]
    else:
        assert "reset-failed aqa-youtube-prod-backend.service" in backend["start"]  # the start limit cleared first
        assert "systemd-run" not in backend["start"]
    assert "alembic upgrade head" in plan["data"]["prepare"] and "$RELEASE_TAG" in plan["data"]["backup"]
    assert plan["data"]["restore"].count('"$RELEASE_BACKUP"') == 1 and "venvs" in plan["cleanup"]
    unstarted = youtube.host_switch_components(ctx, {"backend": "b2", "frontend": "f1"}, False, script)
    assert all(c.start is None and c.gate is None for c in unstarted)


def sh(command: str, env: dict | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})})


def database(ctx, rows: list[str]) -> Path:
    db = Path(ctx.layout.db_path)
    db.parent.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)
    con = sqlite3.connect(db)
    con.execute("create table projects (name text)")
    con.executemany("insert into projects values (?)", [(r,) for r in rows])
    con.commit()
    con.close()
    return db


def names(db: Path) -> list[str]:
    return [r[0] for r in sqlite3.connect(db).execute("select name from projects")]


def test_backup_and_restore_run_on_the_host(tmp_path):
    ctx = make_ctx(str(tmp_path), youtube_keep_backups=2)
    steps = youtube.host_data_steps(ctx, migrate=False)
    assert sh(steps.backup, {"RELEASE_TAG": "app0"}).stdout.strip().splitlines()[-1] == "none"  # no database yet
    db = database(ctx, ["launch video"])
    out = sh(steps.backup, {"RELEASE_TAG": "app1"})
    backup = out.stdout.strip().splitlines()[-1]
    assert out.returncode == 0 and backup.startswith(f"{ctx.layout.backups}/youtube_assistant_prod-") and backup.endswith("-app1.db")
    assert names(Path(backup)) == ["launch video"] and oct(Path(backup).stat().st_mode & 0o777) == "0o600"
    database(ctx, ["something else"])
    assert sh(steps.restore, {"RELEASE_BACKUP": backup}).returncode == 0
    assert names(db) == ["launch video"]
    for tag in ("app2", "app3"):
        time.sleep(1.1)  # the stamp has a one-second resolution
        assert sh(steps.backup, {"RELEASE_TAG": tag}).returncode == 0
    assert sorted(p.name.rsplit("-", 1)[1] for p in Path(ctx.layout.backups).iterdir()) == ["app2.db", "app3.db"]  # keep 2


def fake_venv(ctx, state: dict) -> None:
    """`<venv>/bin/python` answering the AlembicState script with `state`."""
    py = Path(ctx.layout.backend) / "venv-prod" / "bin" / "python"
    py.parent.mkdir(parents=True, exist_ok=True)
    py.write_text(f"#!/bin/sh\necho '{json.dumps(state)}'\n")
    py.chmod(0o755)


@pytest.mark.parametrize("state, backup, ok, message, after", [
    ({"db_exists": True, "current": ["0001"], "heads": ["0001"]}, True, True, "already matches this release", "live"),
    ({"db_exists": False, "current": [], "heads": ["0001"]}, False, True, "already matches this release", "live"),
    ({"db_exists": True, "current": ["0002"], "heads": ["0001"]}, True, True, "database restored from", "old"),
    ({"db_exists": True, "current": ["0002"], "heads": None}, True, True, "database restored from", "old"),  # as at_head
    ({"db_exists": True, "current": ["0002"], "heads": ["0001"]}, False, False, "no backup taken while app1 was live", "live"),
])
def test_a_rollback_checks_the_database_against_the_release_on_the_host(tmp_path, state, backup, ok, message, after):
    ctx = make_ctx(str(tmp_path))
    db = database(ctx, ["live"])
    fake_venv(ctx, state)
    if backup:
        Path(ctx.layout.backups).mkdir(parents=True)
        old = database(make_ctx(str(tmp_path / "elsewhere")), ["old"])
        os.replace(old, f"{ctx.layout.backups}/youtube_assistant_prod-20261201T100000-app1.db")
    out = sh(youtube.host_data_steps(ctx, migrate=False, restore_for="app1").prepare)
    assert (out.returncode == 0) is ok, out.stdout + out.stderr
    assert message in out.stdout + out.stderr
    if state["db_exists"]:
        assert names(db) == [after]


FAKE_SYSTEMD_RUN = """#!/bin/sh
echo "systemd-run $*" >> "$CALLS"
while [ "$1" != -- ]; do shift; done; shift
exec "$@"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_file_backend(tmp_path: Path, run_script: str, **overrides):
    """The backend's release with `run_script` as its .infra-run, fake systemd-run and
    systemctl on PATH; (spec, env for sh)."""
    ctx = make_ctx(str(tmp_path), youtube_backend_port=free_port(), **overrides)
    backend = ctx.specs[0]
    release = Path(ctx.layout.backend)
    release.mkdir(parents=True)
    (release / ".env").write_text("X=1\n")
    (release / youtube.RUN_SCRIPT).write_text(run_script.format(port=backend.port))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemd-run").write_text(FAKE_SYSTEMD_RUN)
    (bin_dir / "systemctl").write_text('#!/bin/sh\necho "systemctl $*" >> "$CALLS"\n[ "$2" = is-active ] && { echo inactive; exit 3; }\nexit 0\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return backend, {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls")}


LISTENS = "#!/bin/sh\nexec python3 -m http.server {port} --bind 127.0.0.1\n"


def test_the_pid_file_start_runs_in_a_scope_of_its_own_waits_for_the_port_and_the_stop_finds_it(tmp_path):
    backend, env = pid_file_backend(tmp_path, LISTENS)
    start = sh(youtube.host_start_command(backend, "pidfile", "aqa-youtube-prod", 60), env)
    assert start.returncode == 0, start.stdout + start.stderr
    calls = (tmp_path / "calls").read_text()
    assert "systemd-run --user --scope --quiet --collect --unit=aqa-youtube-prod-backend-pid-" in calls
    pid = wait_for_pidfile(Path(backend.pidfile))
    assert f"pid {pid} listening on {backend.port}" in start.stdout  # returned once the port answered
    stop = sh(youtube.host_stop_command(backend, 3), env)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not Path(backend.pidfile).exists() and "is-active aqa-youtube-prod-backend.service" in (tmp_path / "calls").read_text()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_pid_file_process_that_exits_at_start_fails_the_start_with_its_log(tmp_path):
    # the real backend with an error at import: uvicorn exits at once. The start used to
    # return 0 and leave the gate polling for start + health timeout (150 s on the real app).
    crash = "#!/bin/sh\necho 'RuntimeError: backend refuses to start'\nexit 1\n"
    backend, env = pid_file_backend(tmp_path, crash, youtube_start_timeout_s=3600)
    start = sh(youtube.host_start_command(backend, "pidfile", "aqa-youtube-prod", 3600), env)
    assert start.returncode != 0
    assert "the process exited right after it was started" in start.stdout
    assert f"last lines of {backend.log}:" in start.stdout and "RuntimeError: backend refuses to start" in start.stdout


def wait_for_pidfile(path: Path) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip().isdigit():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"no PID file {path}")
