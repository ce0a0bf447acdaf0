"""deploys/youtube.py on a disposable Debian 12 host, as an ordinary user over SSH (no
root, no sudo), beside a running development instance of the same sample app.

Order matters (module-scoped host): guard rails before the first deploy, the PID-file
mode with every edge case of the plan, an update (backup + migration, only the backend
restarts), updates that fail (pip, migration: the previous release keeps serving with its
database), releases and rollback, then systemd user units (lingering, restart after any
exit, start with the user's manager, the remembered mode) and back to PID files.
Development (8000/3000, its venv and database) must be untouched at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest

from deploys.settings import cli_data_value
from facts.procs import USER_SYSTEMCTL
from tests.apps.youtube_assistant.wheels import ensure_wheels
from tests.e2e.runner import REPO, Run, apply, pyinfra
from tests.harness._util import docker
from tests.harness.fixtures import module_host

pytestmark = pytest.mark.e2e

HOST = "youtube-1"
USER = "yt"
HOME = f"/home/{USER}"
SRC = f"{HOME}/dev/aqa-youtube-assistant"
PROD = f"{HOME}/aqa-youtube-assistant-prod"
UNITS = ("aqa-youtube-prod-backend.service", "aqa-youtube-prod-frontend.service")
SECRET = 'yt-key "quoted" $HOME `id` \\ end'
ENV = {"YOUTUBE_API_KEY": SECRET}
DEPLOY = "deploys/youtube.py"
APP = REPO / "tests" / "apps" / "youtube_assistant"

# The sample app instead of Next.js/npm; everything else is the defaults of group_data/youtube.py.
DATA = {
    "ssh_user": USER,
    "youtube_pip_args": ["--no-index", "--find-links", "{home}/wheels"],
    "youtube_frontend_install_cmd": "python3 build.py --install",  # plays npm ci
    "youtube_frontend_build_cmd": "python3 build.py",
    "youtube_frontend_artifact": "dist",
    "youtube_frontend_paths": ["dist", "node_modules", "server.py", "launch.py", "package.json"],
    # launch.py plays npm: the PID file names the launcher, its child listens
    "youtube_frontend_cmd": "python3 launch.py start -- -H {bind} -p {frontend_port}",
    "youtube_backend_secrets": ["YOUTUBE_API_KEY"],
    "youtube_stop_timeout_s": 3,
    "youtube_restart_sec": 1,
    "health_timeout_s": 20,
}


def run(action: str = "deploy", expect_ok: bool = True, **extra) -> Run:
    data = {**DATA, "youtube_action": action, **extra}
    if expect_ok:
        return apply(DEPLOY, limit=HOST, env=ENV, data=data, timeout=300)
    result = pyinfra(DEPLOY, limit=HOST, env=ENV, data=data, timeout=300)
    assert result.returncode != 0, result.output[-4000:]
    return result


def as_user(host, command: str, check: bool = True, timeout: float = 120) -> str:
    return host.exec(["runuser", "-l", USER, "-c", command], check=check, timeout=timeout).stdout


def get_json(host, port: int, path: str) -> dict:
    return json.loads(host.exec(f"curl -fsS --max-time 5 http://127.0.0.1:{port}{path}").stdout)


def listener_pid(host, port: int) -> int | None:
    """The (lowest) pid listening on `port`, asked as the user (root in `docker exec` lacks
    CAP_SYS_PTRACE and cannot see other users' sockets' owners)."""
    out = as_user(host, f"ss -H -tlnp 'sport = :{port}'")
    pids = [int(p) for p in re.findall(r"pid=(\d+)", out)]
    return min(pids) if pids else None


def pidfile(host, name: str) -> int | None:
    out = host.exec(f"cat {PROD}/pids/{name}.pid 2>/dev/null || true").stdout.strip()
    return int(out) if out.isdigit() else None


def instances(host, port: int) -> int:
    """How many servers of user yt serve `port` (uvicorn, or server.py under its launcher)."""
    out = host.exec(f"pgrep -u {USER} -f -- '(--port|^python3 server.py .*-p) {port}$' || true").stdout
    return len(out.split())


def ancestors(host, pid: int) -> list[int]:
    """pid's parent, grandparent, ... up to (not including) PID 1."""
    out = []
    while True:
        pid = int(host.exec(f"ps -o ppid= -p {pid}").stdout.strip() or 1)
        if pid <= 1:
            return out
        out.append(pid)


def served_by(host, name: str, port: int) -> bool:
    """The PID file names the listener, or (frontend) the launcher whose descendant listens."""
    pid, listener = pidfile(host, name), listener_pid(host, port)
    return bool(pid and listener) and (pid == listener or pid in ancestors(host, listener))


def bound_address(host, port: int) -> str:
    return as_user(host, f"ss -H -tln 'sport = :{port}'").split()[3].rsplit(":", 1)[0]


def commit_all(host, message: str) -> str:
    as_user(host, f"cd {SRC} && git add -A && git -c user.name=dev -c user.email=dev@example.invalid commit -qm {shlex.quote(message)}")
    return as_user(host, f"git -C {SRC} rev-parse HEAD").strip()


def unit(host, name: str) -> dict:
    out = as_user(host, f"XDG_RUNTIME_DIR=/run/user/$(id -u) systemctl --user show -p ActiveState,MainPID,UnitFileState,NRestarts {name}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def db_query(host, db: str, sql: str) -> list:
    script = f"import json, sqlite3; print(json.dumps(sqlite3.connect('file:{db}?mode=ro', uri=True).execute({sql!r}).fetchall()))"
    return json.loads(as_user(host, f"python3 -c {shlex.quote(script)}"))


def wait_for(predicate, timeout: float = 20, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


# ----------------------------------------------------------------------------- the host


def prepare(host, public_key: str) -> dict:
    """The operator's machine: python3-venv and pam_systemd (a desktop has both), a login
    user with the harness key, the checkout, a wheel cache, and dev running on 8000/3000."""
    host.exec(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        "python3-venv libpam-systemd git >/dev/null",
        timeout=300,
    )
    host.exec(
        f"useradd -m -s /bin/bash {USER} && install -d -m 700 -o {USER} -g {USER} {HOME}/.ssh {HOME}/dev && "
        f"install -m 600 -o {USER} -g {USER} /dev/null {HOME}/.ssh/authorized_keys && "
        f"cat >> {HOME}/.ssh/authorized_keys",
        input=public_key + "\n",
    )
    cid = host.container_id
    docker("exec", cid, "mkdir", "-p", SRC)
    for part in ("backend", "frontend"):
        docker("cp", str(APP / part), f"{cid}:{SRC}/{part}")
    docker("cp", str(ensure_wheels()), f"{cid}:{HOME}/wheels")
    host.exec(
        f"find {SRC} -name __pycache__ -prune -exec rm -rf {{}} + ; rm -rf {SRC}/frontend/dist; "
        f"chown -R {USER}:{USER} {HOME}"
    )
    as_user(host, f"cd {SRC} && printf 'venv/\\n*.db\\n.env\\nnext-env.d.ts\\ndist/\\n__pycache__/\\n' > .gitignore && git init -q")
    host.commit = commit_all(host, "sample app")
    # Development, as the developer runs it: own venv (with dev tools), own .env and database.
    as_user(
        host,
        f"cd {SRC}/backend && printf 'DATABASE_URL=sqlite:///./youtube_assistant.db\\nPORT=8000\\n' > .env && "
        "python3 -m venv venv && venv/bin/pip install -q --no-index --find-links ~/wheels -r requirements-dev.txt && "
        "set -a && . ./.env && set +a && venv/bin/python -m alembic upgrade head 2>/dev/null && "
        "{ setsid nohup venv/bin/python -m uvicorn app.main:app --host 127.0.0.1 --port 8000 > /tmp/dev-backend.log 2>&1 < /dev/null & } && "
        f"cd {SRC}/frontend && "
        "{ NEXT_PUBLIC_API_URL=http://localhost:8000 PYTHONDONTWRITEBYTECODE=1 setsid nohup python3 server.py -p 3000 --dev "
        "> /tmp/dev-frontend.log 2>&1 < /dev/null & }",
        timeout=600,  # venv + pip install: minutes on a loaded machine
    )
    wait_for(lambda: listener_pid(host, 8000) and listener_pid(host, 3000), what="dev on 8000/3000")
    return {
        "backend": listener_pid(host, 8000),
        "frontend": listener_pid(host, 3000),
        "db_sha": host.exec(f"sha256sum {SRC}/backend/youtube_assistant.db").stdout.split()[0],
    }


@pytest.fixture(scope="module")
def yt(request, test_cluster):
    host = module_host(request, test_cluster, HOST, groups=["youtube", "local"])
    host.dev = prepare(host, test_cluster.public_key)
    return host


# ----------------------------------------------------------------------------- guard rails


def test_wrong_checkout_and_root_are_refused_before_any_change(yt):
    wrong = run(expect_ok=False, youtube_source_dir="~/dev")
    assert f"youtube_source_dir {HOME}/dev is not a checkout of the YouTube assistant (missing: backend" in wrong.output
    as_root = run(expect_ok=False, ssh_user="root")
    assert "connected as root: the YouTube assistant runs as an ordinary user" in as_root.output
    assert "] Success" not in wrong.output + as_root.output
    assert yt.exec(f"test -e {PROD}", check=False).returncode != 0


def test_run_control_before_a_deploy_answers_clearly(yt):
    start = run("start", expect_ok=False)
    assert f"production is not built and deployed in {PROD}" in start.output
    assert "run the deploy first (`make youtube-deploy`" in start.output
    stop = run("stop")
    assert stop.changed == []
    status = run("status")
    assert "not deployed yet" in status.output and status.changed == []


# ----------------------------------------------------------------------------- phase 1: PID files


SWITCH = "Release switched (only what changed restarts; rolled back on failure)"


def test_deploy_then_second_apply_changes_nothing(yt):
    first = run()
    for op in (
        "Frontend production build", "Backend venv (runtime requirements)", "Frontend release built",
        "Backend release built", SWITCH,
    ):
        assert first.did(op), (op, first.changed)
    assert SECRET not in first.output and "yt-key" not in first.output
    assert yt.exec(f"test -e {SRC}/frontend/next-env.d.ts", check=False).returncode == 0  # written by dev
    # what the framework generates in the checkout is no source change
    as_user(yt, f"echo '// regenerated' >> {SRC}/frontend/next-env.d.ts")
    second = run()
    assert second.changed == [], second.changed


def test_production_runs_beside_development(yt):
    prod, dev = get_json(yt, 8001, "/api/health"), get_json(yt, 8000, "/api/health")
    assert prod["database"] == f"{PROD}/shared/youtube_assistant_prod.db" and prod["port"] == "8001"
    assert dev["database"] == f"{SRC}/backend/youtube_assistant.db" and dev["port"] == "8000"
    assert prod["revision"] == dev["revision"] == "0001"
    assert prod["secret_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest() and dev["secret_sha256"] is None
    page = yt.exec("curl -fsS http://127.0.0.1:3001/").stdout
    assert 'content="http://localhost:8001"' in page
    assert get_json(yt, 3001, "/api/backend")["backend"]["database"] == prod["database"]
    assert get_json(yt, 3000, "/api/backend")["backend"]["database"] == dev["database"]
    assert len({listener_pid(yt, p) for p in (8000, 8001, 3000, 3001)}) == 4
    # separate venvs: production has runtime requirements only
    assert as_user(yt, f"{PROD}/backend/venv-prod/bin/python -c 'import alembic, uvicorn, sqlalchemy' && echo ok").strip() == "ok"
    assert as_user(yt, f"{PROD}/backend/venv-prod/bin/python -c 'import iniconfig'", check=False) == ""
    assert as_user(yt, f"{SRC}/backend/venv/bin/python -c 'import iniconfig' && echo ok").strip() == "ok"
    # copies, never links into the checkout; nothing written into the checkout
    assert yt.exec(f"find {PROD} -lname '{SRC}*'").stdout == ""
    assert yt.exec(f"readlink {PROD}/backend").stdout.startswith("releases/backend/")
    # node_modules is hard-linked from the build, not copied
    inodes = yt.exec(f"stat -c %i {HOME}/.cache/aqa-youtube-assistant-prod-build/frontend/node_modules/sample-dep/index.js "
                     f"{PROD}/frontend/node_modules/sample-dep/index.js").stdout.split()
    assert len(inodes) == 2 and inodes[0] == inodes[1]
    assert as_user(yt, f"git -C {SRC} status --porcelain") == ""
    assert yt.exec(f"test -e {SRC}/frontend/dist", check=False).returncode != 0


def test_env_files_are_private_and_hold_the_operators_values(yt):
    t = yt.testinfra()
    for path in (f"{PROD}/backend/.env", f"{PROD}/frontend/.env"):
        f = t.file(path)
        assert (f.user, f.group, f.mode) == (USER, USER, 0o600), path
    backend_env = yt.exec(f"cat {PROD}/backend/.env").stdout
    assert "DATABASE_URL=\"sqlite:///" + PROD in backend_env and 'PORT="8001"' in backend_env
    assert "YOUTUBE_API_KEY=" in backend_env
    assert 'NEXT_PUBLIC_API_URL="http://localhost:8001"' in yt.exec(f"cat {PROD}/frontend/.env").stdout
    assert t.file(PROD).mode == 0o700


def test_pid_files_logs_and_processes_belong_to_the_user(yt):
    # the frontend is a tree, as npm -> sh -c "next start" -> next-server: the PID file names
    # the launcher, a descendant listens
    launcher, server = pidfile(yt, "frontend"), listener_pid(yt, 3001)
    assert launcher != server and launcher in ancestors(yt, server)
    assert "launch.py start" in yt.exec(f"cat /proc/{launcher}/cmdline | tr '\\0' ' '").stdout
    assert int(yt.exec(f"ps -o pgid= -p {server}").stdout) == launcher  # one group: stop signals the tree
    assert pidfile(yt, "backend") == listener_pid(yt, 8001)
    for name, port in (("backend", 8001), ("frontend", 3001)):
        pid = pidfile(yt, name)
        assert served_by(yt, name, port), name
        assert yt.exec(f"ps -o user= -p {pid}").stdout.strip() == USER
        assert yt.exec(f"test -s {PROD}/{name}.log", check=False).returncode == 0


def test_start_when_running_starts_no_duplicate(yt):
    before = (pidfile(yt, "backend"), pidfile(yt, "frontend"))
    result = run("start")
    assert result.changed == [], result.changed
    assert f"backend: already running (pid {before[0]}); not started again" in result.output
    assert (pidfile(yt, "backend"), pidfile(yt, "frontend")) == before
    assert instances(yt, 8001) == 1 and instances(yt, 3001) == 1


def test_frontend_binds_the_configured_address(yt):
    assert bound_address(yt, 3001) == "127.0.0.1" and bound_address(yt, 8001) == "127.0.0.1"
    assert bound_address(yt, 3000) in ("0.0.0.0", "*")  # `next start` without -H: every interface
    address = yt.exec("hostname -I").stdout.split()[0]
    assert yt.exec(f"curl -sS --max-time 3 -o /dev/null http://{address}:3001/", check=False).returncode != 0


def test_pid_files_deleted_while_running_are_recovered(yt):
    before = (pidfile(yt, "backend"), pidfile(yt, "frontend"))
    yt.exec(f"rm -rf {PROD}/pids")  # the whole directory: recreated
    status = run("status")
    assert status.output.count("PID file MISSING") == 2
    result = run("start")
    assert result.did("backend running (PID file)") and result.did("frontend running (PID file)")
    assert "without its PID file: PID file restored, not started again" in result.output
    assert (pidfile(yt, "backend"), pidfile(yt, "frontend")) == before
    assert instances(yt, 8001) == 1 and instances(yt, 3001) == 1


def test_process_killed_by_hand_is_detected_and_restarted(yt):
    old = pidfile(yt, "backend")
    yt.exec(f"kill -9 {old}")
    wait_for(lambda: listener_pid(yt, 8001) is None, what="backend gone")
    assert f"not running: stale PID file (pid {old} is gone" in run("status").output
    result = run("start")
    assert f"stale PID file (pid {old} is gone): removed" in result.output
    new = pidfile(yt, "backend")
    assert new and new != old and served_by(yt, "backend", 8001)
    assert get_json(yt, 8001, "/api/health")["status"] == "healthy"


def test_reused_pid_is_never_signalled_and_stop_forces_after_the_timeout(yt):
    as_user(yt, "{ setsid nohup sleep 300 > /dev/null 2>&1 < /dev/null & }")
    sleeper = int(wait_for(lambda: yt.exec(f"pgrep -u {USER} -x sleep || true").stdout.split(), what="sleep")[0])
    real = pidfile(yt, "frontend")
    yt.exec(f"echo {sleeper} > {PROD}/pids/frontend.pid")
    status = run("status")
    assert f"stale PID file (pid {sleeper} is now sleep 300); but an instance runs as pid {real}" in status.output
    yt.exec(f"touch {PROD}/frontend/.ignore-sigterm")  # the sample frontend now ignores SIGTERM
    try:
        stop = run("stop")
    finally:
        yt.exec(f"rm -f {PROD}/frontend/.ignore-sigterm")
    assert "not signalled; PID file removed" in stop.output
    assert "ignored SIGTERM for 3s: killed with SIGKILL" in stop.output
    assert yt.exec(f"pgrep -u {USER} -f 'server.py .*-p 3001' || true").stdout.strip() == ""  # no orphan
    assert "with SIGTERM in" in stop.output  # the backend stopped gracefully
    assert yt.exec(f"kill -0 {sleeper}", check=False).returncode == 0, "the unrelated program was signalled"
    yt.exec(f"kill {sleeper}")
    assert listener_pid(yt, 8001) is None and listener_pid(yt, 3001) is None
    assert yt.exec(f"ls {PROD}/pids").stdout.strip() == ""


def test_stop_when_stopped_changes_nothing(yt):
    result = run("stop")
    assert result.changed == [] and "not running; nothing to stop" in result.output


def test_a_foreign_program_on_the_port_is_named_and_nothing_starts(yt):
    as_user(yt, "{ setsid nohup python3 -m http.server 8001 --bind 127.0.0.1 > /dev/null 2>&1 < /dev/null & }")
    squatter = wait_for(lambda: listener_pid(yt, 8001), what="squatter")
    try:
        result = run("start", expect_ok=False)
        assert "port 8001 (backend) is in use by python3 -m http.server 8001" in result.output
        assert "] Success" not in result.output and listener_pid(yt, 3001) is None
    finally:
        yt.exec(f"kill {squatter}")
    wait_for(lambda: listener_pid(yt, 8001) is None, what="squatter gone")
    assert run("start").did("backend running (PID file)")
    assert run("start").changed == []


def test_update_backs_up_migrates_and_restarts_only_the_backend(yt):
    as_user(yt, f"python3 -c \"import sqlite3; c = sqlite3.connect('{PROD}/shared/youtube_assistant_prod.db'); "
                "c.execute(\\\"insert into projects (name) values ('launch video')\\\"); c.commit()\"")
    docker("cp", str(APP / "migrations_next" / "0002_add_video_title.py"), f"{yt.container_id}:{SRC}/backend/alembic/versions/")
    yt.exec(f"chown {USER}:{USER} {SRC}/backend/alembic/versions/0002_add_video_title.py")
    yt.commit = commit_all(yt, "0002: video title")
    old_backend, old_frontend = pidfile(yt, "backend"), pidfile(yt, "frontend")
    result = run()
    assert result.did("Backend release built") and result.did(SWITCH)
    assert not result.did("Frontend production build") and not result.did("Frontend release built")
    assert not result.did("Backend venv (runtime requirements)")  # same requirements: the venv is shared
    backups = yt.exec(f"ls {PROD}/backups").stdout.split()
    assert len(backups) == 1 and backups[0].startswith("youtube_assistant_prod-"), backups
    backup = f"{PROD}/backups/{backups[0]}"
    assert db_query(yt, backup, "select version_num from alembic_version") == [["0001"]]
    assert db_query(yt, backup, "select name from projects") == [["launch video"]]
    prod_db = f"{PROD}/shared/youtube_assistant_prod.db"
    assert db_query(yt, prod_db, "select version_num from alembic_version") == [["0002"]]
    assert db_query(yt, prod_db, "select name, video_title from projects") == [["launch video", None]]
    health = get_json(yt, 8001, "/api/health")
    assert health["revision"] == "0002" and health["pid"] != old_backend
    assert pidfile(yt, "frontend") == old_frontend  # the frontend's release did not change: not restarted
    assert get_json(yt, 8000, "/api/health")["revision"] == "0001"  # dev: not migrated by production
    status = run("status")
    assert f"commit {yt.commit[:12]}" in status.output and "dirty" not in status.output
    assert run().changed == []


def previous_serves(yt, before: tuple, revision: str = "0002") -> None:
    assert get_json(yt, 8001, "/api/health")["revision"] == revision
    assert get_json(yt, 3001, "/api/backend")["backend"]["revision"] == revision
    assert served_by(yt, "backend", 8001) and served_by(yt, "frontend", 3001)
    assert pidfile(yt, "frontend") == before[1]


def test_a_failing_pip_install_leaves_the_live_release_serving(yt):
    before = (pidfile(yt, "backend"), pidfile(yt, "frontend"))
    as_user(yt, f"echo 'no-such-package-yt==9.9' >> {SRC}/backend/requirements.txt")
    try:
        result = run(expect_ok=False)
    finally:
        as_user(yt, f"sed -i '/no-such-package-yt/d' {SRC}/backend/requirements.txt")
    assert "pip install failed: the live release keeps serving" in result.output
    assert pidfile(yt, "backend") == before[0]  # never stopped
    previous_serves(yt, before)
    assert run().changed == []


def test_a_failing_migration_puts_back_the_previous_release_and_database(yt):
    prod_db = f"{PROD}/shared/youtube_assistant_prod.db"
    rows = db_query(yt, prod_db, "select name, video_title from projects")
    before = (pidfile(yt, "backend"), pidfile(yt, "frontend"))
    live = yt.exec(f"readlink {PROD}/backend").stdout.strip()
    target = f"{SRC}/backend/alembic/versions/0003_fails_halfway.py"
    docker("cp", str(APP / "migrations_next" / "0003_fails_halfway.py"), f"{yt.container_id}:{target}")
    try:
        result = run(expect_ok=False)
    finally:
        yt.exec(f"rm -f {target}")
    assert "0003 fails halfway" in result.output and "rolled back to backend" in result.output
    assert yt.exec(f"readlink {PROD}/backend").stdout.strip() == live
    assert db_query(yt, prod_db, "select version_num from alembic_version") == [["0002"]]
    assert ["half_done"] not in db_query(yt, prod_db, "select name from sqlite_master where type='table'")
    assert db_query(yt, prod_db, "select name, video_title from projects") == rows
    previous_serves(yt, before)
    assert run().changed == []


def test_releases_rollback_with_its_database_and_forward_again(yt):
    listing = run(release_action="releases")
    assert listing.changed == [] and listing.output.count(f"commit {yt.commit[:12]}") == 1
    assert re.search(r"\* [0-9a-f]{12} .* deploy ", listing.output)
    before = pidfile(yt, "frontend")
    back = run(release_action="rollback")
    assert "database restored from" in back.output
    assert get_json(yt, 8001, "/api/health")["revision"] == "0001"
    assert db_query(yt, f"{PROD}/shared/youtube_assistant_prod.db", "select name from projects") == [["launch video"]]
    assert pidfile(yt, "frontend") == before  # only the backend differs between the two releases
    assert "rollback" in run(release_action="releases").output
    assert "no single kept release matches 'ffffff'" in run(expect_ok=False, release_action="rollback", release_to="ffffff").output
    forward = run()  # the checkout's state again: its release is still kept, nothing is rebuilt
    assert not forward.did("Backend release built") and forward.did(SWITCH)
    assert get_json(yt, 8001, "/api/health")["revision"] == "0002"
    assert run().changed == []


def test_a_failing_build_changes_nothing_in_production(yt):
    before = (pidfile(yt, "backend"), pidfile(yt, "frontend"))
    result = run(expect_ok=False, youtube_frontend_build_cmd="sh -c 'echo error TS2304 in page.tsx >&2; exit 2'")
    assert "error TS2304 in page.tsx" in result.output and "frontend build failed" in result.output
    assert "dependencies unchanged" in result.output  # package*.json unchanged: node_modules kept
    assert (pidfile(yt, "backend"), pidfile(yt, "frontend")) == before
    assert get_json(yt, 3001, "/api/backend")["backend"]["revision"] == "0002"
    assert run().changed == []


# ----------------------------------------------------------------------------- phase 2: systemd user units


def test_systemd_mode_asks_for_lingering_and_changes_nothing(yt):
    before = (pidfile(yt, "backend"), pidfile(yt, "frontend"))
    result = run(expect_ok=False, youtube_mode="systemd")
    assert "lingering, which is off for yt: run `loginctl enable-linger`" in result.output
    assert "sudo loginctl enable-linger yt" in result.output and "youtube_linger_sudo = True" in result.output
    assert (pidfile(yt, "backend"), pidfile(yt, "frontend")) == before
    assert yt.exec(f"ls {HOME}/.config/systemd/user 2>/dev/null || true").stdout.strip() == ""


def test_switch_to_systemd_units_with_the_one_sudo_step(yt):
    # youtube_linger_sudo: the deploy runs `loginctl enable-linger` (only that) with sudo
    yt.exec(f"echo '{USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{USER} && chmod 440 /etc/sudoers.d/{USER}")
    old = listener_pid(yt, 8001)
    try:
        first = run(youtube_mode="systemd", youtube_linger_sudo=True)
    finally:
        yt.exec(f"rm -f /etc/sudoers.d/{USER}")
    assert first.did("Lingering enabled (units start at boot)") and first.did("Units enabled and running")
    assert yt.exec(f"test -e /var/lib/systemd/linger/{USER}", check=False).returncode == 0
    assert first.did("backend stopped (PID file)") or first.did("backend: no PID-file instance (systemd mode)")
    assert yt.exec(f"kill -0 {old}", check=False).returncode != 0
    assert yt.exec(f"ls {PROD}/pids").stdout.strip() == ""
    for name, port in zip(UNITS, (8001, 3001)):
        info = unit(yt, name)
        assert (info["ActiveState"], info["UnitFileState"]) == ("active", "enabled"), info
        holder = listener_pid(yt, port)
        assert f"user@{yt.exec(f'id -u {USER}').stdout.strip()}.service/app.slice/{name}" in yt.exec(f"cat /proc/{holder}/cgroup").stdout
    assert get_json(yt, 3001, "/api/backend")["backend"]["revision"] == "0002"
    again = run(youtube_mode="systemd")
    assert again.changed == [], again.changed


def test_units_come_back_after_any_exit_and_with_the_user_manager(yt):
    # kill -9 (a failure), and a plain kill: npm (here its launcher) then exits 0
    for name, port, sig in ((UNITS[0], 8001, "KILL"), (UNITS[1], 3001, "TERM")):
        before = unit(yt, name)
        yt.exec(f"kill -{sig} {before['MainPID']}")
        after = wait_for(lambda: (u := unit(yt, name))["ActiveState"] == "active" and u["MainPID"] not in ("0", before["MainPID"]) and u,
                         what=f"{name} restarted by systemd after SIG{sig}")
        assert int(after["NRestarts"]) >= 1
        wait_for(lambda: listener_pid(yt, port), what=f"{port} listening again")
    # the user manager restarting (as at boot with lingering, or at login) starts both units
    yt.exec(f"systemctl restart user@$(id -u {USER})")
    wait_for(lambda: listener_pid(yt, 8001) and listener_pid(yt, 3001), timeout=30, what="units after the manager restarted")
    assert get_json(yt, 8001, "/api/health")["status"] == "healthy"


def test_systemd_start_stop_status_in_the_remembered_mode(yt):
    # no youtube_mode: the mode recorded by the last deploy (systemd) is used
    stop = run("stop")
    assert stop.did("User units stopped")
    assert all(unit(yt, u)["ActiveState"] == "inactive" for u in UNITS)
    assert listener_pid(yt, 8001) is None and listener_pid(yt, 3001) is None
    assert run("stop").changed == []
    status = run("status")
    assert f"unit {UNITS[0]}: inactive" in status.output and "enabled" in status.output
    start = run("start")
    assert start.did("Units enabled and running") and not start.did("No systemd user units (PID-file mode)")
    assert run("start").changed == []
    status = run("status")
    assert f"unit {UNITS[0]}: active (running)" in status.output and "port 8001 listening" in status.output
    assert "health: GET http://127.0.0.1:8001/api/health -> HTTP 200" in status.output


def killed_when(predicate, timeout: float = 240, **extra) -> str:
    """Run the deploy and SIGKILL pyinfra (its SSH session with it) once `predicate()` holds
    on the host; its output."""
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", DEPLOY, "-y", "--limit", HOST]
    for key, value in {**DATA, "youtube_action": "deploy", **extra}.items():
        cmd += ["--data", f"{key}={cli_data_value(value)}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "DEPLOY_ENV": "test", "PYINFRA_PROGRESS": "off", **ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: proc.poll() is not None or predicate(), timeout=timeout, what="the moment to kill pyinfra")
        assert proc.poll() is None, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(10)
    return "".join(lines)


BUILD_UNIT = "aqa-youtube-prod-frontend-build"
RELEASE_UNIT = "aqa-youtube-prod-release"


def test_a_build_cut_off_with_pyinfra_is_finished_by_its_unit_and_the_next_apply_converges(yt):
    """With lingering the frontend build runs as a transient unit of yt's systemd manager
    (issue 15, item 4): pyinfra SIGKILLed mid-build does not stop it or leave it orphaned;
    the next apply waits for it, reports it and does not build again; the one after
    changes nothing. The build blocks on a gate file so the test picks the moments."""
    gate, count = f"{HOME}/.build-gate", f"{HOME}/.builds"
    slow = {"youtube_frontend_build_cmd": f"sh -c 'until [ -e {gate} ]; do sleep 0.2; done; echo b >> {count}; python3 build.py'"}

    def build_state() -> str:
        return as_user(yt, f"{USER_SYSTEMCTL} is-active {BUILD_UNIT}.service", check=False).strip()

    output = killed_when(lambda: build_state() == "active", **slow)
    assert "Frontend production build" in output and "Frontend release built" not in output.split("Frontend production build")[-1]
    assert build_state() == "active"  # pyinfra and its session are gone; the build goes on
    results: list = []
    resume = threading.Thread(target=lambda: results.append(run(**slow)))
    resume.start()
    try:  # the next apply waits for the cut-off build (wait_for_step) ...
        wait_for(lambda: yt.exec(f"pgrep -u {USER} -f 'host-step {BUILD_UNIT} user ' || true").stdout.strip(),
                 timeout=120, what="the next apply waiting for the cut-off build")
    finally:
        as_user(yt, f"touch {gate}")  # ... which now ends
        resume.join(300)
    assert results, "the apply after the cut-off build failed (see its output above)"
    again = results[0]
    assert f"{BUILD_UNIT}.service is still running (an apply was cut off): waiting for it first" in again.output
    notes = yt.exec("journalctl -q -o cat -t host-step").stdout  # the step's notes (logger), as ingestor's
    assert f"{BUILD_UNIT}.service: the earlier run ended: success" in notes, notes[-2000:]
    # the build op, re-evaluated when it runs, finds the cut-off run's build current (no new
    # unit); had it found it unfinished, its own unit would have said so in the step's log
    assert (not again.did("Frontend production build")
            or "the frontend build was finished by an earlier run" in yt.exec(f"cat {PROD}/frontend-build.log").stdout)
    assert again.did("Frontend release built") and again.did(SWITCH)
    assert yt.exec(f"cat {count}").stdout.split() == ["b"]  # built once, by the cut-off run's unit
    # with lingering the switch itself ran on the host (youtube_switch_on_host), in systemd mode
    assert "is live" in yt.exec(f"cat {PROD}/release-switch.log").stdout
    assert run(**slow).changed == []
    assert get_json(yt, 3001, "/api/backend")["backend"]["revision"] == "0002"


def test_switch_back_to_pid_files(yt):
    result = run(youtube_mode="pidfile")
    assert result.did("No systemd user units (PID-file mode)")
    assert yt.exec(f"ls {HOME}/.config/systemd/user/*.service 2>/dev/null || true").stdout.strip() == ""
    for name, port in (("backend", 8001), ("frontend", 3001)):
        assert served_by(yt, name, port)
    assert run().changed == []  # and pidfile is remembered


def test_killed_during_the_host_side_switch_in_pid_file_mode_the_switch_goes_on(yt):
    """PID-file mode with lingering: the switch runs on the host as a unit of yt's manager
    (issue 15, item 4/5). pyinfra SIGKILLed while that unit migrates: the unit goes on (its
    hooks block on a gate file, so the test picks the moment); the next apply waits for it
    before planning; the new backend, started in a scope of its own, outlives the switch
    unit; the apply converges and the one after changes nothing. Then a rollback and
    forward again, also on the host (the database check runs there)."""
    gate = f"{HOME}/.switch-gate"
    slow = {"youtube_migrate_cmd": f"sh -c 'until [ -e {gate} ]; do sleep 0.2; done; exec {{venv}}/bin/python -m alembic upgrade head'"}
    as_user(yt, f"echo '# host-side switch' >> {SRC}/backend/app/main.py")
    yt.commit = commit_all(yt, "backend: a change the host-side switch rolls out")
    old_backend, old_frontend = pidfile(yt, "backend"), pidfile(yt, "frontend")

    def switch_state() -> str:
        return as_user(yt, f"{USER_SYSTEMCTL} is-active {RELEASE_UNIT}.service", check=False).strip()

    output = killed_when(lambda: switch_state() == "active", **slow)
    assert "Release switched" in output
    assert switch_state() == "active"  # pyinfra and its session are gone; the switch goes on
    results: list = []
    resume = threading.Thread(target=lambda: results.append(run(**slow)))
    resume.start()
    try:  # the next apply waits for the cut-off switch before it plans (host_steps.settled) ...
        wait_for(lambda: yt.exec(f"pgrep -u {USER} -f 'host-step {RELEASE_UNIT} user ' || true").stdout.strip(),
                 timeout=120, what="the next apply waiting for the cut-off switch")
    finally:
        as_user(yt, f"touch {gate}")  # ... which now goes through
        resume.join(300)
    assert results, "the apply after the cut-off switch failed (see its output above)"
    again = results[0]
    assert f"{RELEASE_UNIT}.service is still running (an apply was cut off): waiting for it before planning" in again.output
    assert switch_state() != "active"
    log = yt.exec(f"cat {PROD}/release-switch.log").stdout
    assert "database migrated" in log and "is live" in log, log[-2000:]
    last = json.loads(yt.exec(f"tail -n 1 {PROD}/releases/history.jsonl").stdout)
    assert last["action"] == "deploy" and last["commit"] == yt.commit, last
    assert last["components"]["backend"] == yt.exec(f"basename $(readlink {PROD}/backend)").stdout.strip()
    # the new backend outlived the unit that started it: its own scope, not the switch's cgroup
    new_backend = pidfile(yt, "backend")
    assert new_backend and new_backend != old_backend and served_by(yt, "backend", 8001)
    cgroup = yt.exec(f"cat /proc/{new_backend}/cgroup").stdout
    assert "aqa-youtube-prod-backend-pid-" in cgroup and RELEASE_UNIT not in cgroup, cgroup
    assert pidfile(yt, "frontend") == old_frontend  # only the backend changed
    assert get_json(yt, 8001, "/api/health")["status"] == "healthy"
    assert run(**slow).changed == [], "second re-run after a kill during the host-side switch"

    back = run(release_action="rollback")
    assert "the database already matches this release: kept as it is" in yt.exec(f"cat {PROD}/release-switch.log").stdout
    assert any("Rolled back to release" in op for op in back.changed), back.changed
    assert served_by(yt, "backend", 8001) and pidfile(yt, "backend") != new_backend
    forward = run()
    assert forward.did(SWITCH) and not forward.did("Backend release built")
    assert served_by(yt, "backend", 8001) and get_json(yt, 8001, "/api/health")["revision"] == "0002"
    assert run().changed == []


def test_a_backend_that_does_not_start_fails_the_host_side_switch_at_once(yt):
    """PID-file mode, switch on the host: a backend that exits at start-up (an error at
    import, as the real app's uvicorn showed) fails the switch's start hook at once, since
    the start waits for the port only while the PID file's process lives (as start_now
    does from the controller). It used to return at once and leave the gate polling for
    start + health timeout. The previous release and database come back."""
    prod_db = f"{PROD}/shared/youtube_assistant_prod.db"
    rows = db_query(yt, prod_db, "select name from projects")
    live = yt.exec(f"readlink {PROD}/backend").stdout.strip()
    frontend = pidfile(yt, "frontend")
    as_user(yt, f"echo 'raise RuntimeError(\"sample backend refuses to start\")' >> {SRC}/backend/app/main.py")
    try:
        result = run(expect_ok=False)
    finally:
        as_user(yt, f"cd {SRC} && git checkout -- backend/app/main.py")
    assert "did not start" in result.output and "the process exited right after it was started" in result.output
    assert "RuntimeError: sample backend refuses to start" in result.output  # the log's last lines
    assert "is not healthy" not in result.output and "rolled back to backend" in result.output
    assert yt.exec(f"readlink {PROD}/backend").stdout.strip() == live
    assert db_query(yt, prod_db, "select name from projects") == rows
    assert served_by(yt, "backend", 8001) and pidfile(yt, "frontend") == frontend
    assert run().changed == []


def test_development_was_never_touched(yt):
    assert listener_pid(yt, 8000) == yt.dev["backend"] and listener_pid(yt, 3000) == yt.dev["frontend"]
    assert yt.exec(f"sha256sum {SRC}/backend/youtube_assistant.db").stdout.split()[0] == yt.dev["db_sha"]
    assert get_json(yt, 3000, "/api/backend")["backend"]["database"] == f"{SRC}/backend/youtube_assistant.db"
