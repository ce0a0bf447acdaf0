"""deploys/hivesync.py's local targets on a disposable host that plays the operator's
machine, reached over SSH as an ordinary user (`dev`, in the `docker` group), as @local
would run as the operator:

- N.2.2 local Docker (`hivesync_role = "local_docker"`): the server's compose stack
  (backend built here from the checkout, postgres, redis; the stand-in images of
  tests/apps/hivesync, as in test_hivesync.py), as `dev`, under ~/.local/share/hivesync,
  without ufw, nginx or certbot; stop/start/status keep the data.

Tests run in order and share the host: refusals that change nothing first.
"""

from __future__ import annotations

import json
import shlex

import pytest

from facts.sockets import is_loopback_only, parse_ss
from tests.e2e.test_hivesync import SECRETS, checkout, images, load_images  # noqa: F401  (module fixtures)
from tests.e2e.runner import apply, pyinfra
from tests.harness.fixtures import module_host, test_cluster, test_cluster_hosts  # noqa: F401

pytestmark = pytest.mark.e2e

HOST = "hivesync-laptop"
USER = "dev"
HOME = f"/home/{USER}"
DIR = f"{HOME}/.local/share/hivesync"
DEPLOY = "deploys/hivesync.py"


def as_user(host, command: str, check: bool = True):
    return host.exec(["runuser", "-l", USER, "-c", command], check=check)


@pytest.fixture(scope="module")
def laptop(request, test_cluster, images):  # noqa: F811
    """Docker is installed (by its owner, not by this deploy); `dev` logs in with the harness key."""
    host = module_host(request, test_cluster, HOST, groups=["local", "hivesync"],
                       data={"hivesync_role": "local_docker"}, docker=True)
    load_images(host, [images["backend"], images["postgres"], images["redis"]])
    host.exec(
        f"useradd -m -s /bin/bash {USER} && install -d -m 700 -o {USER} -g {USER} {HOME}/.ssh && "
        f"install -m 600 -o {USER} -g {USER} /dev/null {HOME}/.ssh/authorized_keys && "
        f"cat >> {HOME}/.ssh/authorized_keys",
        input=test_cluster.public_key + "\n",
    )
    return host


def local_data(images, checkout, **extra) -> dict:  # noqa: F811
    return {
        "ssh_user": USER,
        "hivesync_role": "local_docker",
        "hivesync_backend_source": str(checkout),
        "hivesync_backend_build_args": {"BASE": images["backend"]},
        "hivesync_postgres_image": images["postgres"],
        "hivesync_redis_image": images["redis"],
        "hivesync_healthcheck_timing": {"interval": "1s", "timeout": "5s", "retries": 10, "start_period": "60s"},
        "hivesync_health_timeout_s": 90,
        **extra,
    }


def run(images, checkout, action="deploy", check=True, **extra):  # noqa: F811
    return (apply if check else pyinfra)(DEPLOY, limit=HOST, env=SECRETS,
                                         data=local_data(images, checkout, hivesync_local_action=action, **extra))


def untouched(host) -> bool:
    return host.exec(f"test -e {DIR} || docker ps -aq | grep -q .", check=False).returncode != 0


def states(host) -> dict:
    out = host.exec("docker ps -a --filter label=com.docker.compose.project=hivesync "
                    "--format '{{.Label \"com.docker.compose.service\"}} {{.State}}'").stdout
    return dict(line.split() for line in out.splitlines())


def health(host) -> dict | None:
    out = as_user(host, "curl -fsS --max-time 5 http://127.0.0.1:4000/health", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


# ----------------------------------------------------------------------------- refusals


def test_root_and_a_user_without_docker_are_refused_before_any_change(laptop, images, checkout):  # noqa: F811
    as_root = run(images, checkout, check=False, ssh_user="root")
    assert as_root.returncode != 0
    assert "connected as root: the local targets run as the operator" in as_root.output, as_root.output[-3000:]
    no_docker = run(images, checkout, check=False)
    assert no_docker.returncode != 0
    assert f"docker does not answer for {USER}" in no_docker.output and "docker group" in no_docker.output, \
        no_docker.output[-3000:]
    assert "Traceback" not in as_root.output + no_docker.output
    assert untouched(laptop)
    laptop.exec(f"usermod -aG docker {USER}")  # what the operator does once (or Docker Desktop)


def test_a_taken_port_is_refused(laptop, images, checkout):  # noqa: F811
    laptop.exec("python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\", 6379)); s.listen(); "
                "time.sleep(600)' >/dev/null 2>&1 & echo $! > /tmp/squatter.pid")
    try:
        taken = run(images, checkout, check=False)
    finally:
        laptop.exec("kill $(cat /tmp/squatter.pid)")
    assert taken.returncode != 0
    assert "port 6379 (hivesync_redis_port) is taken by another program" in taken.output, taken.output[-3000:]
    assert untouched(laptop)


# ----------------------------------------------------------------------------- N.2.2 local Docker


@pytest.fixture(scope="module")
def first_up(laptop, images, checkout):  # noqa: F811
    return run(images, checkout)


def test_up_then_a_second_apply_changes_nothing(laptop, images, checkout, first_up):  # noqa: F811
    assert first_up.did("Compose stack hivesync (backend, postgres, redis)"), first_up.changed
    assert any(n.startswith("Backend image built here from") or "| Backend image built here from" in n
               for n in first_up.changed), first_up.changed
    second = run(images, checkout)
    assert second.changed == [], second.changed


def test_the_stack_runs_as_the_operator_on_loopback_without_ufw_nginx_or_certbot(laptop, first_up):
    assert health(laptop)["ok"] is True
    sockets = parse_ss(laptop.exec("ss -H -tulnp").stdout.splitlines())
    for port in (4000, 5432, 6379):
        assert is_loopback_only(sockets, port, "tcp"), [s for s in sockets if s["port"] == port]
    files = laptop.testinfra()
    for path, mode in ((DIR, 0o700), (f"{DIR}/secrets", 0o700), (f"{DIR}/.env.production", 0o600),
                       (f"{DIR}/secrets/generated.env", 0o600), (f"{DIR}/secrets/user.env", 0o600)):
        f = files.file(path)
        assert f.exists and f.user == USER and f.mode == mode, (path, f.user, oct(f.mode))
    env = dict(line.split("=", 1) for line in files.file(f"{DIR}/.env.production").content_string.splitlines()
               if "=" in line and not line.startswith("#"))
    assert env["BASE_URL"] == "http://127.0.0.1:4000" and env["WORKER_CALLBACK_SECRET"] == SECRETS["WORKER_CALLBACK_SECRET"]
    assert len(env["JWT_SECRET"]) == 64 and env["POSTGRES_PASSWORD"]
    for value in [*SECRETS.values(), env["JWT_SECRET"], env["POSTGRES_PASSWORD"]]:
        assert value not in first_up.output
    # nothing of the server role: no firewall, no web server, no root-owned state
    assert laptop.exec("command -v ufw || command -v nginx || command -v certbot || test -e /etc/hivesync || "
                       "test -e /opt/hivesync", check=False).returncode != 0
    deployed = dict(line.split(" ", 1) for line in files.file(f"{DIR}/DEPLOYED").content_string.splitlines())
    assert deployed["image"].startswith("hivesync-backend:src-")


def test_stop_start_and_status_keep_the_data(laptop, images, checkout, first_up):  # noqa: F811
    user = {"email": "dev@example.com", "password": "correct horse battery"}
    register = as_user(laptop, "curl -fsS -o /dev/null -w '%{http_code}' -H 'content-type: application/json' "
                               f"-d {shlex.quote(json.dumps(user))} http://127.0.0.1:4000/auth/register")
    assert register.stdout == "200"
    stop = run(images, checkout, action="stop")
    assert stop.did("Compose project hivesync stopped") and set(states(laptop).values()) == {"exited"}
    assert health(laptop) is None
    assert run(images, checkout, action="stop").changed == []
    status = run(images, checkout, action="status")
    assert status.changed == [] and "backend   exited" in status.output, status.output[-3000:]
    start = run(images, checkout, action="start")
    assert start.did("Compose project hivesync started") and set(states(laptop).values()) == {"running"}
    assert health(laptop)["ok"] is True
    assert run(images, checkout, action="start").changed == []
    again = as_user(laptop, "curl -sS -o /dev/null -w '%{http_code}' -H 'content-type: application/json' "
                            f"-d {shlex.quote(json.dumps(user))} http://127.0.0.1:4000/auth/register")
    assert again.stdout == "409"  # the user registered before the stop is still there
    status = run(images, checkout, action="status")
    assert "backend   running (healthy)" in status.output and "/health -> HTTP 200" in status.output, \
        status.output[-3000:]
