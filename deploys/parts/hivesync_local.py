"""HiveSync on the operator's own machine, as the operator (N.2.2 local Docker and N.2.1
local development): the home-directory layout over the server's data, the preflight
(not root, docker answering for this user, a compose CLI, the checkout, the secrets, free
ports, disk), the status report, the env files (0600, the operator's), and local
development's processes (the backend from the checkout in a venv, one `wrangler dev` per
worker with its .dev.vars) and their files.
"""

from __future__ import annotations

import logging
import shlex

from pyinfra import host
from pyinfra.api import HiddenValue, operation
from pyinfra.context import state
from pyinfra.facts.files import FileContents

from deploys import secrets
from deploys.errors import ConfigError, PreflightFailed
from deploys.operations import lines_logged, secret_file
from deploys.parts.compose import detected_cli
from deploys.parts.hivesync_stack import SERVICES, _local, backend_source, backend_url, backend_values, env_files
from deploys.parts.hivesync_workers import enabled_workers, stage_worker
from deploys.parts.local_machine import Overlay, expand_home, service_state
from deploys.parts.procs import ProcSpec
from facts.compose import ComposeServices
from facts.hivesync import DockerServer
from facts.http import HttpHealth, describe
from facts.sockets import ListeningSockets
from facts.system import FreeDiskMb

logger = logging.getLogger("pyinfra")


def local_layout(data, home: str) -> Overlay:
    """hivesync_local_dir holds the compose and env files, the build and the secrets (0700)."""
    base = expand_home(data.hivesync_local_dir, home)
    return Overlay(data, hivesync_dir=base, hivesync_secrets_dir=f"{base}/secrets")


def local_problems(data, ident: dict, action: str) -> list[str]:
    """Why the stack cannot run here as this user (prepare time, changes nothing)."""
    user = ident.get("user") or "?"
    problems = []
    if ident.get("uid") == 0:
        problems.append("connected as root: the local targets run as the operator (set ssh_user to the operator, "
                        "or run pyinfra @local as yourself)")
    docker = host.get_fact(DockerServer)
    if not docker["ok"]:
        problems.append(f"docker does not answer for {user}: {docker['error']} (start Docker Desktop or dockerd, "
                        f"or add {user} to the docker group and log in again)")
    elif detected_cli() is None:
        problems.append("no compose CLI: neither `docker compose` (v2) nor `docker-compose` (v1)")
    if action != "deploy":
        return problems
    try:
        backend_source(data)
    except ConfigError as exc:
        problems.append(str(exc))
    if missing := secrets.missing(list(data.required_secrets), secrets.load()):
        problems.append(f"missing or placeholder secrets: {', '.join(missing)}")
    running = host.get_fact(ComposeServices, project=data.hivesync_compose_project) if docker["ok"] else {}
    listening = {s["port"] for s in host.get_fact(ListeningSockets) or [] if s["proto"] == "tcp"}
    for service, port in (("backend", data.hivesync_backend_port), ("postgres", data.hivesync_postgres_port),
                          ("redis", data.hivesync_redis_port)):
        if port and port in listening and (running.get(service) or {}).get("state") != "running":
            problems.append(f"port {port} (hivesync_{service}_port) is taken by another program on this machine")
    free = host.get_fact(FreeDiskMb, path=ident.get("home") or "/")
    if free is not None and free < int(data.preflight_min_disk_mb):
        problems.append(f"{free} MiB free in {ident.get('home')}, need {data.preflight_min_disk_mb}")
    return problems


@operation(is_idempotent=True)
def local_status(data, services=SERVICES):
    """Each service's state and health, the backend's health URL and what was deployed."""
    if not state.is_executing:
        host.noop("status is read when the deploy runs")
        return
    running = host.get_fact(ComposeServices, project=data.hivesync_compose_project)
    lines = [f"HiveSync local Docker in {data.hivesync_dir} (compose project {data.hivesync_compose_project})"]
    for service in services:
        lines.append(f"  {service:<9} {service_state(running.get(service) or {})}")
    if "backend" in services:
        health = host.get_fact(HttpHealth, url=backend_url(data))
        lines.append(f"  health    {backend_url(data)}: {describe(health)}")
        for line in host.get_fact(FileContents, path=f"{data.hivesync_dir}/DEPLOYED") or ["not deployed yet"]:
            lines.append(f"  deployed  {line}")
    yield from lines_logged(lines)


def local_environment(data, ident: dict):
    """.env.production (0600, the operator's) from user.env (data + .env) and the secrets
    generated once in <dir>/secrets/generated.env: the server's env, the local BASE_URL."""
    return env_files(data, "here", owner={"user": ident["user"], "group": ident["group"]})


def dev_layout(data, home: str) -> Overlay:
    base = expand_home(data.hivesync_local_dir, home)
    checkout = data.hivesync_dev_checkout or str(_local(data.hivesync_backend_source))
    return Overlay(data, hivesync_dir=base, hivesync_secrets_dir=f"{base}/secrets", hivesync_env_file=".env.dev",
                   hivesync_dev_checkout=expand_home(checkout, home))


def dev_dir(data) -> str:
    """PID files, logs, the venv and the staged workers of local development."""
    return f"{data.hivesync_dir}/dev"


def dev_backend_env(data) -> dict:
    """The backend outside compose reaches postgres and redis on their published ports."""
    env = dict(data.hivesync_backend_env)
    env.update({"POSTGRES_HOST": data.hivesync_bind_address, "POSTGRES_PORT": data.hivesync_postgres_port,
                "REDIS_HOST": data.hivesync_bind_address, "REDIS_PORT": data.hivesync_redis_port})
    return env


def _fill(words: list[str], values: dict) -> str:
    out = []
    for word in words:
        for key, value in values.items():
            word = word.replace("{" + key + "}", str(value))
        out.append(shlex.quote(word))
    return " ".join(out)


def dev_specs(data, venv: str, workers: list[str]) -> list[ProcSpec]:
    bind, dev = data.hivesync_bind_address, dev_dir(data)
    values = {"venv": venv, "checkout": data.hivesync_dev_checkout, "bind": bind, "port": data.hivesync_backend_port}
    specs = [ProcSpec(id="backend", command=_fill(list(data.hivesync_dev_backend_cmd), values),
                      cwd=data.hivesync_dev_checkout,
                      log=f"{dev}/backend.log", pidfile=f"{dev}/pids/backend.pid", family="hivesync-dev:backend",
                      unit="hivesync-dev-backend.service", port=int(data.hivesync_backend_port),
                      env_file=f"{data.hivesync_dir}/{data.hivesync_env_file}", health_url=backend_url(data),
                      description="HiveSync backend (dev, venv)")]
    for index, worker in enumerate(workers):
        port = int(data.hivesync_dev_worker_port) + index
        command = _fill([data.hivesync_wrangler, "dev", "--config", "wrangler.toml", "--env", "dev", "--ip", bind,
                         "--port", str(port)], {})
        specs.append(ProcSpec(id=worker, command=command, cwd=f"{dev}/workers/{worker}", log=f"{dev}/{worker}.log",
                              pidfile=f"{dev}/pids/{worker}.pid", family=f"hivesync-dev:{worker}",
                              unit=f"hivesync-dev-{worker}.service", port=port, health_url=f"http://{bind}:{port}/",
                              description=f"HiveSync worker {worker} (wrangler dev)"))
    return specs


def dev_workers(data) -> list[str]:
    """The enabled workers that have source; none (a warning) when the checkout has no
    workers folder (upstream c5680a2): the backend still runs."""
    src, enabled, missing = enabled_workers(data)
    if src is None or not src.is_dir():
        logger.warning(f"no workers folder {src} (hivesync_workers_src): only the backend runs in dev mode")
        return []
    if missing:
        raise PreflightFailed(f"preflight failed on {host.name}: workers {', '.join(missing)} have no folder under "
                              f"{src}; disable them in hivesync_workers or add their source")
    return enabled


def dev_worker_files(data, worker: str, ident: dict) -> list:
    """Source, wrangler.toml ([env.dev]) and .dev.vars (the dev secrets, 0600): the
    operations whose change needs a restart of `wrangler dev`."""
    directory = f"{dev_dir(data)}/workers/{worker}"
    _, _, toml = stage_worker(data, worker, directory)
    values = secrets.get(list(data.hivesync_worker_secrets))
    text = "".join(f"{name}={values[name].unmask()}\n" for name in data.hivesync_worker_secrets)
    dev_vars = secret_file(name=f"{worker}: .dev.vars (dev secrets)", dest=f"{directory}/.dev.vars",
                           content=HiddenValue(text), user=ident["user"], group=ident["group"])
    return [toml, dev_vars]


def dev_environment(data, ident: dict):
    """.env.dev (0600, the operator's): the server's settings with postgres and redis on
    their published loopback ports, the secrets generated once in <dir>/secrets (the
    database local Docker made keeps its password)."""
    return env_files(data, "here", owner={"user": ident["user"], "group": ident["group"]}, user_env="user-dev.env",
                     values=backend_values(Overlay(data, hivesync_backend_env=dev_backend_env(data))))
