"""The foundation, end to end: hardened service + preflight + health gate on a real host.

Applies deploys/hello.py over SSH, applies it again (0 changes), inspects the host with
testinfra, upgrades the code (restart, data kept), and proves the secret never shows.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from facts.sockets import is_loopback_only, listeners_on, parse_ss
from tests.e2e.runner import REPO, apply, pyinfra
from tests.harness.fixtures import module_host

pytestmark = pytest.mark.e2e

HOST = "hello-1"
# Quotes, $, backquote and backslash: proves the EnvironmentFile escaping end to end.
SECRET = 'p@ss "word" $HOME `id` \\ end'
ENV = {"HELLO_SECRET": SECRET}


@pytest.fixture(scope="module")
def hello(request, test_cluster):
    return module_host(request, test_cluster, HOST, groups=["native_vm", "hello"])


@pytest.fixture(scope="module")
def first_apply(hello):
    return apply("deploys/hello.py", limit=HOST, env=ENV)


@pytest.fixture(scope="module")
def ti(hello, first_apply):
    return hello.testinfra()


def health(ti) -> dict:
    script = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/health').read().decode())"
    return json.loads(ti.check_output(f'python3 -c "{script}"'))


def test_first_apply_changes_and_second_apply_changes_nothing(first_apply):
    assert first_apply.did("Unit /etc/systemd/system/hello.service")
    again = apply("deploys/hello.py", limit=HOST, env=ENV)
    assert again.changed == [], f"second apply changed: {again.changed}"


USERS_COMMANDS = """
import json
from pyinfra.facts.server import Users
from deploys import pyinfra_speedups
pyinfra_speedups.install()
print(json.dumps([Users().command(), Users.command.original(Users())]))
"""
REMOTE_COMMAND = re.compile(r"\[pyinfra\.connectors\.ssh\] (Running command on|Uploading)")


def test_noop_apply_is_answered_by_the_fact_prefetch(first_apply):
    """A no-op after a no-op: the lock with the prefetch and the health gate's first reading
    (one command) and the record are its only remote commands (32 without the prefetch). In
    verify mode every fact is also read from the host: each prefetched answer equals the real
    fact."""
    apply("deploys/hello.py", limit=HOST, env=ENV)  # a no-op asks what it asks (and saves it)
    counted = pyinfra("deploys/hello.py", "--debug", limit=HOST, env=ENV)
    assert counted.returncode == 0 and counted.changed == [], counted.output[-3000:]
    assert len(REMOTE_COMMAND.findall(counted.output)) == 2, counted.output[-3000:]
    verified = apply("deploys/hello.py", limit=HOST, env={**ENV, "INFRA_FACT_CACHE": "verify"})
    summary = re.search(r"fact cache (\d+) hits, (\d+) misses.*verified (\d+), mismatches (\d+)", verified.output)
    assert summary, verified.output[-3000:]
    hits, misses, checked, mismatches = map(int, summary.groups())
    assert (misses, mismatches) == (0, 0) and checked == hits >= 20, summary.group(0)


def test_secret_never_appears_in_pyinfra_output(first_apply):
    assert SECRET not in first_apply.output
    assert "p@ss" not in first_apply.output


def test_unit_is_enabled_and_active(ti):
    service = ti.service("hello")
    assert service.is_enabled and service.is_running


def test_env_file_is_root_only_and_unit_holds_no_secret(ti):
    env_file = ti.file("/etc/hello/hello.env")
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "root", 0o600)
    assert ti.file("/etc/hello").mode == 0o700
    unit = ti.file("/etc/systemd/system/hello.service").content_string
    assert "p@ss" not in unit and "EnvironmentFile=/etc/hello/hello.env" in unit


def test_secret_reaches_the_app_byte_for_byte(ti):
    assert health(ti)["secret_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()


def test_exposure_is_at_most_2(ti):
    out = ti.check_output("systemd-analyze security hello.service --no-pager | tail -1")
    score = float(out.split("exposure level for hello.service:")[1].split()[0])
    assert score <= 2.0, out


def test_port_is_bound_to_loopback_only(ti, hello):
    sockets = parse_ss(ti.check_output("ss -H -tulnp").splitlines())
    assert listeners_on(sockets, 8080), "nothing listens on 8080"
    assert is_loopback_only(sockets, 8080), listeners_on(sockets, 8080)
    with pytest.raises(OSError):
        socket.create_connection((hello.address, 8080), timeout=3)


def test_service_runs_as_its_own_user_and_can_write_only_its_data(ti):
    assert ti.check_output("systemctl show -p User --value hello") == "hello"
    assert ti.file("/var/lib/hello/starts").user == "hello"
    assert ti.file("/opt/hello/app/app.py").user == "root"


def test_code_change_restarts_once_and_keeps_data(hello, ti, tmp_path):
    before = health(ti)
    app = tmp_path / "hello-1.1.0"
    shutil.copytree(REPO / "tests/apps/hello", app)
    (app / "VERSION").write_text("1.1.0\n")
    run = apply("deploys/hello.py", limit=HOST, env=ENV, data={"hello_app_src": str(app)})
    assert run.did("Restart hello (its unit, environment or code changed)")
    after = health(ti)
    assert after["version"] == "1.1.0"
    assert after["starts"] == before["starts"] + 1  # data dir kept across the restart
    again = apply("deploys/hello.py", limit=HOST, env=ENV, data={"hello_app_src": str(app)})
    assert again.changed == []
    back = apply("deploys/hello.py", limit=HOST, env=ENV)  # and back to the original release
    assert back.did("Restart hello (its unit, environment or code changed)")
    assert health(ti)["version"] == before["version"]


def test_health_gate_fails_with_the_last_observed_status_and_changes_nothing(first_apply):
    run = apply_expecting_failure(data={"hello_health_path": "/missing", "health_timeout_s": 3})
    assert "not healthy after 3s; last observed: GET http://127.0.0.1:8080/missing -> HTTP 404" in run.output
    assert "] Success" not in run.output, "the failed run changed something"


def test_a_secret_the_app_prints_is_masked_in_the_failed_gate(hello, first_apply, tmp_path):
    """The failed gate quotes the unit's journal; the app printed its secret there."""
    app = tmp_path / "hello-leaky"
    shutil.copytree(REPO / "tests/apps/hello", app)
    (app / "VERSION").write_text("broken-leaky\n")
    run = apply_expecting_failure(data={"hello_app_src": str(app), "health_timeout_s": 3})
    assert "hello: cannot connect with secret ***" in run.output, run.output[-3000:]
    assert SECRET not in run.output
    assert apply("deploys/hello.py", limit=HOST, env=ENV).did("Restart hello (its unit, environment or code changed)")


def apply_expecting_failure(**kwargs):
    from tests.e2e.runner import pyinfra

    run = pyinfra("deploys/hello.py", limit=HOST, env=ENV, **kwargs)
    assert run.returncode != 0, run.output[-3000:]
    return run


# --- Run safety: typed settings, deploy lock, audit log (deploys/settings.py, parts/deploy_lock.py)

def audit(hello) -> list[dict]:
    out = hello.exec("cat /var/log/infra/deploys.jsonl").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_bad_settings_are_refused_before_connecting(hello, first_apply):
    before = hello.exec("cat /var/log/infra/deploys.jsonl | wc -l").stdout
    run = pyinfra("deploys/hello.py", limit=HOST, env=ENV,
                  data={"hello_prot": 9090, "hello_port": "abc", "hello_bind": "127.0.0.1\nExecStartPre=/bin/sh"})
    assert run.returncode != 0
    assert "hello_prot (--data): unknown knob (did you mean 'hello_port'?)" in run.output
    assert "hello_port (--data): expected port (1-65535), got 'abc' (str)" in run.output
    assert "hello_bind (--data): contains the control character '\\n'" in run.output
    assert "Traceback" not in run.output and "Connecting" not in run.output
    assert hello.exec("cat /var/log/infra/deploys.jsonl | wc -l").stdout == before  # never reached the host


def test_each_run_is_recorded_with_its_result(hello, first_apply):
    run = apply("deploys/hello.py", limit=HOST, env={**ENV, "INFRA_OPERATOR": "alice"})
    finish = [r for r in audit(hello) if r["event"] == "finish"][-1]
    start = [r for r in audit(hello) if r["event"] == "start" and r["run_id"] == finish["run_id"]][-1]
    assert (finish["result"], finish["changed"], finish["failed"]) == ("success", len(run.changed), 0)
    assert start["who"] == "alice" and start["deploy"] == "hello" and len(start["commit"]) == 12
    assert start["from"] == socket.gethostname()
    assert hello.exec("stat -c %a /var/log/infra/deploys.jsonl").stdout.strip() == "640"
    assert hello.exec("test -e /var/lib/infra/lock/deploy.json", check=False).returncode != 0  # released

    failed = pyinfra("deploys/hello.py", limit=HOST, env=ENV,
                     data={"hello_health_path": "/missing", "health_timeout_s": 2})
    assert failed.returncode != 0
    last = audit(hello)[-1]
    assert (last["event"], last["result"], last["failed"]) == ("finish", "failed", 1)
    assert last["failed_op"].startswith("Health gate")

    history = subprocess.run([sys.executable, "tools/history.py", "hello"], cwd=REPO, capture_output=True,
                             text=True, env={**os.environ, "DEPLOY_ENV": "test"}, timeout=120)
    assert history.returncode == 0, history.stderr
    assert f"{HOST}:" in history.stdout and "alice@" in history.stdout
    assert "failed " in history.stdout.splitlines()[-1] and "at: Health gate" in history.stdout


def test_a_second_run_waits_then_refuses_naming_the_holder(hello, first_apply):
    env = {**os.environ, "DEPLOY_ENV": "test", "PYINFRA_PROGRESS": "off", **ENV, "INFRA_OPERATOR": "bob"}
    # A run held up in its health gate keeps the lock: /missing never answers within 20 s.
    holder = subprocess.Popen(
        [sys.executable, "-m", "pyinfra", "inventory.py", "deploys/hello.py", "-y", "--limit", HOST,
         "--data", "hello_health_path=/missing", "--data", "health_timeout_s=20"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hello_lock = "test -s /var/lib/infra/lock/deploy.json && grep -q '\"who\": \"bob\"' /var/lib/infra/lock/deploy.json"
        deadline = time.monotonic() + 60
        while hello.exec(hello_lock, check=False).returncode != 0:
            assert time.monotonic() < deadline and holder.poll() is None, "the first run never took the lock"
            time.sleep(0.5)
        started = time.monotonic()
        second = pyinfra("deploys/hello.py", limit=HOST, env=ENV, data={"deploy_lock_wait_s": 2})
        assert second.returncode != 0 and time.monotonic() - started >= 2
        assert "is being deployed by another run (bob from" in second.output
        assert "deploy hello" in second.output and "Nothing was changed" in second.output
    finally:
        holder.kill()  # SIGKILL: no finish record, the lock's holder connection dies with it
        holder.wait(timeout=30)
    # The next run takes over the dead lock, records the killed run as interrupted, converges.
    again = apply("deploys/hello.py", limit=HOST, env=ENV)
    assert "took over the deploy lock of an interrupted run (bob from" in again.output
    records = audit(hello)
    assert any(r["event"] == "interrupted" and r["who"] == "bob" for r in records)
    assert records[-1]["event"] == "finish" and records[-1]["result"] == "success"
    assert apply("deploys/hello.py", limit=HOST, env=ENV).changed == []


def test_a_run_refused_by_preflight_is_recorded_and_frees_the_lock(hello, first_apply):
    refused = pyinfra("deploys/hello.py", limit=HOST, env=ENV, data={"preflight_min_disk_mb": 10**9})
    assert refused.returncode != 0 and "preflight failed" in refused.output
    last = audit(hello)[-1]
    assert (last["event"], last["result"]) == ("finish", "refused") and "preflight failed" in last["error"]
    assert hello.exec("test -e /var/lib/infra/lock/deploy.json", check=False).returncode != 0
    assert "took over the deploy lock" not in apply("deploys/hello.py", limit=HOST, env=ENV).output


def test_fast_users_fact_reads_accounts_as_pyinfras_command_does(hello, first_apply):
    """deploys/pyinfra_speedups.USERS_COMMAND against pyinfra's own Users command on a real
    host, after adding the accounts where they could part: supplementary groups, two group
    lines with one gid, membership of one's own primary group, a primary gid with no group
    name. Both commands' lines, and so the fact, are the same."""
    ti = hello.testinfra()
    ti.run("getent passwd users-a >/dev/null || { groupadd users-x; groupadd -g 4242 users-y;"
           " useradd -m -G users-x,users-y,hello users-a; usermod -aG users-a hello;"
           " echo 'users-dup:x:4242:users-a' >> /etc/group;"
           " useradd -N -g 4242 users-b; useradd users-c;"
           " sed -i 's/^users-c:x:\\([0-9]*\\):$/users-c:x:\\1:users-c/' /etc/group;"
           " echo 'users-nogroup:x:1500:77777:Some One,,,:/home/n:/bin/bash' >> /etc/passwd; }")
    try:
        # in a child: pyinfra_cli's gevent patching would stall testinfra in this process
        fast, original = json.loads(subprocess.run(
            [sys.executable, "-c", USERS_COMMANDS], cwd=REPO, capture_output=True, text=True, check=True).stdout)
        lines = ti.check_output(fast).splitlines()
        assert lines == ti.check_output(original).splitlines()
        accounts = {line.split(":", 1)[0]: line.rsplit("|", 4) for line in lines}
        assert accounts["users-a"][2].split() == ["users-a", "hello", "users-x", "users-y", "users-y"]
        assert accounts["users-nogroup"][1] == "77777"
    finally:
        ti.run("for u in users-a users-b users-c; do userdel -r $u 2>/dev/null; done;"
               " sed -i '/^users-nogroup:/d' /etc/passwd; sed -i '/^users-dup:/d' /etc/group;"
               " groupdel users-x; groupdel users-y; gpasswd -d hello users-a 2>/dev/null; true")
