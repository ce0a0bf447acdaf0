"""The foundation, end to end: hardened service + preflight + health gate on a real host.

Applies deploys/hello.py over SSH, applies it again (0 changes), inspects the host with
testinfra, upgrades the code (restart, data kept), and proves the secret never shows.
"""

import hashlib
import json
import shutil
import socket

import pytest

from facts.sockets import is_loopback_only, listeners_on, parse_ss
from tests.e2e.runner import REPO, apply
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


def apply_expecting_failure(**kwargs):
    from tests.e2e.runner import pyinfra

    run = pyinfra("deploys/hello.py", limit=HOST, env=ENV, **kwargs)
    assert run.returncode != 0, run.output[-3000:]
    return run
