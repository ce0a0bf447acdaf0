"""Preflight stops before any change; `make plan` shows diffs; drift exits 2 then 0."""

import shutil
import subprocess
import sys
import time

import pytest

from tests.e2e.runner import REPO, apply, pyinfra
from tests.e2e.snapshots import snapshot
from tests.harness.fixtures import module_host

pytestmark = pytest.mark.e2e

ENV = {"HELLO_SECRET": "preflight-secret"}
ELSEWHERE = "192.0.2.10"  # TEST-NET-1: an address that is certainly not the host


@pytest.fixture(scope="module")
def pf_host(request, test_cluster):
    return module_host(request, test_cluster, "hello-pf", groups=["native_vm", "hello"])


def squat_port(host, port: int) -> None:
    """Another program (its own unit) takes the port the service needs."""
    host.exec(f"systemd-run --unit squatter python3 -m http.server {port} --bind 127.0.0.1")
    deadline = time.monotonic() + 15
    while f":{port} " not in host.exec("ss -Htln").stdout:
        assert time.monotonic() < deadline, "squatter did not start"
        time.sleep(0.2)


def test_every_broken_check_is_named_in_one_message_and_nothing_changes(test_cluster, pf_host):
    test_cluster.set_record("hello.pf.test", ELSEWHERE)
    squat_port(pf_host, 8080)
    before = snapshot(pf_host)
    run = pyinfra(
        "deploys/hello.py",
        limit="hello-pf",
        env=ENV,
        data={
            "hello_dns_names": ["hello.pf.test"],
            "preflight_min_disk_mb": 10**9,
            "preflight_min_memory_mb": 10**9,
            "supported_os": {"ubuntu": ["24.04"]},
            "preflight_python_min": "3.99",
        },
    )
    assert run.returncode != 0
    for problem in [
        "preflight failed on hello-pf",
        f"hello.pf.test resolves to {ELSEWHERE}, not this host",
        "port 8080 is already in use by squatter.service",
        "MiB free on /",
        "(need 1000000000 MiB)",
        "MiB memory available (need 1000000000 MiB)",
        "OS debian 12 is not supported",
        "is older than 3.99",
    ]:
        assert problem in run.output, f"{problem!r} missing from:\n{run.output[-3000:]}"
    assert snapshot(pf_host) == before, "a failed preflight changed the host"


def test_missing_secret_stops_before_connecting(pf_host):
    run = pyinfra("deploys/hello.py", limit="hello-pf", env={"HELLO_SECRET": "REPLACE_ME"})
    assert run.returncode != 0
    assert "missing or placeholder secrets" in run.output and "hello: HELLO_SECRET" in run.output
    assert "Connecting to hosts" not in run.output


def test_a_filled_data_volume_stops_the_deploy_before_any_change(pf_host):
    """A real fill, not a raised threshold: the data directory is its own 64 MiB volume
    (tmpfs), filled to 14 MiB free, under preflight_min_disk_mb. The deploy refuses, naming that
    volume, and the host is as before."""
    pf_host.exec("mkdir -p /var/lib/hello && mount -t tmpfs -o size=64m infra-fill /var/lib/hello"
                 " && fallocate -l 50M /var/lib/hello/filler")
    try:
        free = int(pf_host.exec("df -Pm /var/lib/hello | awk 'NR==2 {print $4}'").stdout)
        assert free < 200
        before = snapshot(pf_host)
        run = pyinfra("deploys/hello.py", limit="hello-pf", env=ENV)
        assert run.returncode != 0
        assert f"only {free} MiB free on /var/lib/hello (need " in run.output, run.output[-3000:]
        assert "Traceback" not in run.output
        assert snapshot(pf_host) == before, "a failed preflight changed the host"
    finally:
        pf_host.exec("umount /var/lib/hello; rmdir /var/lib/hello", check=False)


def test_dns_pointing_at_the_host_passes(test_cluster, pf_host):
    pf_host.exec("systemctl stop squatter", check=False)
    test_cluster.set_record("hello.pf.test", pf_host.address)
    apply("deploys/hello.py", limit="hello-pf", env=ENV, data={"hello_dns_names": ["hello.pf.test"]})


# --- plan and drift, on a repository copy whose template changed ---------------------


@pytest.fixture(scope="module")
def drift_host(request, test_cluster):
    host = module_host(request, test_cluster, "hello-drift", groups=["native_vm", "hello"])
    apply("deploys/hello.py", limit="hello-drift", env=ENV)
    return host


@pytest.fixture(scope="module")
def changed_repo(tmp_path_factory):
    """A copy of the repository whose unit template gained a line."""
    copy = tmp_path_factory.mktemp("repo") / "infra"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", ".hosts", ".git", "__pycache__", ".pytest_cache"))
    (copy / ".venv").symlink_to(REPO / ".venv")
    template = copy / "templates/etc/systemd/system/service.j2"
    template.write_text(template.read_text().replace("[Service]\n", "[Service]\n# drift-marker\n"))
    return copy


def drift(cwd, *args):
    cmd = [sys.executable, "tools/drift.py", "deploys/hello.py", "--limit", "hello-drift", *args]
    env = {**__import__("os").environ, "DEPLOY_ENV": "test", **ENV}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_drift_is_0_when_in_sync(drift_host):
    result = drift(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in sync" in result.stdout


def test_make_plan_shows_the_template_diff_and_changes_nothing(drift_host, changed_repo):
    env = {**__import__("os").environ, **ENV}
    result = subprocess.run(
        ["make", "-s", "plan", "DEPLOY=hello", "LIMIT=hello-drift"],
        cwd=changed_repo, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "+ # drift-marker" in out, out[-3000:]
    unit = drift_host.exec("cat /etc/systemd/system/hello.service").stdout
    assert "drift-marker" not in unit


def test_drift_is_2_before_apply_and_0_after(drift_host, changed_repo):
    before = drift(changed_repo)
    assert before.returncode == 2, before.stdout + before.stderr
    assert "Unit /etc/systemd/system/hello.service: hello-drift" in before.stdout
    apply("deploys/hello.py", limit="hello-drift", env=ENV, cwd=changed_repo)
    after = drift(changed_repo)
    assert after.returncode == 0, after.stdout + after.stderr
