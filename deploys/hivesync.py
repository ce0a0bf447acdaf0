"""HiveSync (plan 004, "Phase N"): backend on a Linode VM, Workers on Cloudflare.

    pyinfra inventory.py deploys/hivesync.py                  # disposable test hosts
    DEPLOY_ENV=prod pyinfra inventory.py deploys/hivesync.py  # the Linode + this machine

Each host plays one role (`hivesync_role`, from the inventory):

server (the Linode VM): preflight (OS, disk, total and available memory, the domain's A
record, ports 80/443 free or nginx's, secrets, the backend checkout) -> ufw (deny
incoming; 22, 80, 443) -> Docker -> the backend image built ON the host from the
operator's checkout, tagged by content, as a transient unit (deploys/parts/source_image.py;
unchanged source: nothing sent, nothing built) -> backup (pg_dump, verified, + the
compose and env files) when the backend image or the compose file changes -> the env
file (.env.production, 0600; the backend's own secrets, backend/app/config.py at
upstream c5680a2, generated once on the host; every variable typed by
deploys/env_schema.py and checked before connecting) -> the
compose stack (backend, postgres, redis; volumes; ports on 127.0.0.1; one port knob
drives the command, the container and PORT) -> health gate (compose healthchecks, the
backend's /health, and Alembic at head when it has an alembic.ini, else the plan's
tables) that rolls back to the previous release when it fails (restoring the dump when
the failed release changed the database) -> nginx (HTTP -> HTTPS, /api/ with its prefix
stripped, WebSocket, /internal denied, nothing else) + certbot -> final gate -> HTTPS
checked from the machine running pyinfra -> <dir>/DEPLOYED (image, commit, ref: make
hivesync-status) -> the release's history line (`make releases DEPLOY=hivesync`; `make
rollback DEPLOY=hivesync [TO=id]` runs this role with a kept image pinned). On a first deploy (nothing to roll back to)
a failing gate lets nginx/TLS come up and the final gate fails the run.

workstation (the operator's machine): refused (this host only, one message) until
https://<domain>/api/health answers with a valid certificate and the checkout has its
workers folder (upstream has none yet); then per worker a wrangler.toml ([env.dev],
[env.production], the R2 binding, WORKER_CALLBACK_URL), `wrangler deploy --env
production` only when the worker's source or config changed (a local digest), and its
secrets pushed with `wrangler secret put NAME --env production` on stdin (never in argv,
never printed); before that `npm ci` when a worker's lockfile changed, and `wrangler
deploy --dry-run`; routes and cron triggers are data; the R2 bucket gets the plan's
prefixes as placeholder objects once. The very first deploy goes in two steps: `--limit
<the Linode>` first, then a plain run (the workstation then passes, or fails alone).

Where the plan is naive, this follows the real backend: it serves at its root (nginx
strips /api/), creates its tables with create_all (no Alembic), reads R2_ACCESS_KEY /
R2_SECRET_KEY / R2_ENDPOINT; an image change is preceded by a verified dump, and the same
WORKER_CALLBACK_SECRET reaches the backend and the workers.

This file is the roles' phases; the mechanisms are parts (deploys/parts/): hivesync_config
(every knob, checked before connecting), hivesync_stack (the stack the server, local_docker
and local_dev roles all run, its env file and the checks a gate polls), hivesync_release
(backup before a release, the gate that rolls back), hivesync_workers (the workers'
wrangler.toml), wrangler (Cloudflare operations), hivesync_local + local_machine (the
operator's machine: layout, preflight, status, env files, dev processes),
and the shared source_image, compose, docker_host, firewall, tls and procs.
"""

from __future__ import annotations

import logging
import time
from io import StringIO

from pyinfra import host
from pyinfra.api import operation
from pyinfra.context import ctx_host
from pyinfra.facts.files import Sha256File
from pyinfra.facts.server import Home
from pyinfra.operations import files
from pyinfra.operations.util import any_changed

from deploys import secrets
from deploys.errors import ConfigError, PreflightFailed
from deploys.operations import wait_until
from deploys.parts import deploy_lock, releases
from deploys.parts.compose import compose_check, compose_stack, fail_command
from deploys.parts.docker_host import docker_host
from deploys.parts.firewall import firewall
from deploys.parts.health import external_https_check
from deploys.parts.hivesync_config import check_config
from deploys.parts.hivesync_local import (dev_dir, dev_environment, dev_layout, dev_specs, dev_worker_files, dev_workers,
                                          local_environment, local_layout, local_problems, local_status)
from deploys.parts.hivesync_release import (COMPONENT, backup_before_release, dump_path, gate_or_rollback,
                                            image_retagged, release_change, release_meta, release_recorded,
                                            release_series)
from deploys.parts.hivesync_stack import (BUILD_UNIT, DEV_SERVICES, SERVICES, backend_image, backend_image_step,
                                          backend_source, backend_url, deployed_record, dev_check, dev_compose,
                                          environment, render_compose, stack_check, status_script)
from deploys.parts.hivesync_workers import stage_worker, worker_routes, workers_problems
from deploys.parts.host_steps import wait_for_step
from deploys.parts.local_machine import Overlay, dev_venv, local_compose
from deploys.parts.preflight import collect_problems, memory_problems
from deploys.parts.procs import pid_process_running, pid_process_stopped, status_report
from deploys.parts.tls import https_site
from deploys.parts.wrangler import r2_bucket, r2_placeholders, worker_digest, wrangler_deploy, wrangler_secret
from facts.procs import Identity
from facts.system import MemAvailableMb, MemTotalMb

logger = logging.getLogger("pyinfra")

SECRET_SALT = "hivesync-worker-secret"  # in the workers' secret records (a change re-pushes every secret)
LOCAL_HINT = dict(app="HiveSync", deploy_hint="make hivesync-local-up first")


# ----------------------------------------------------------------------------- nginx / TLS


def vhosts(data) -> list[dict]:
    """The plan's N.8: /api/ (its prefix stripped: the backend serves at its root) and the
    WebSocket path(s) only; /internal denied; anything else 404 (no /docs in public)."""
    backend = f"{data.hivesync_bind_address}:{data.hivesync_backend_port}"
    locations = [{"path": p, "deny": True} for p in data.hivesync_denied_paths]
    locations.append({"path": data.hivesync_api_prefix, "upstream": backend, "websocket": True,
                      "strip_prefix": bool(data.hivesync_strip_api_prefix)})
    locations += [{"path": p, "upstream": backend, "websocket": True} for p in data.hivesync_websocket_paths]
    return [{"server_name": data.hivesync_domain, "upstream": backend, "websocket": True,
             "max_body": data.hivesync_max_body, "locations": locations, "catch_all": False}]


def external_check(data):
    url = f"https://{data.hivesync_domain}{data.hivesync_public_health_path}"
    wait_until(
        name=f"{url} healthy through nginx (from here)",
        check=external_https_check(data.hivesync_public_health_path, data.hivesync_domain,
                                   data.hivesync_external_address, data.hivesync_external_ca_file),
        description=url, timeout_s=data.health_timeout_s, interval_s=data.health_interval_s,
    )


# ----------------------------------------------------------------------------- server role


def server_preflight(data) -> None:
    """Every problem in one message, before the first change."""
    ports = {80: "nginx.service", 443: "nginx.service", data.hivesync_backend_port: "docker.service"}
    for port in (data.hivesync_postgres_port, data.hivesync_redis_port):
        if port:
            ports[port] = "docker.service"
    problems = collect_problems(names=[data.hivesync_domain], ports=ports, secrets=data.required_secrets)
    try:
        backend_source(data)
    except ConfigError as exc:
        problems.append(str(exc))
    memory = memory_problems(host.get_fact(MemTotalMb), host.get_fact(MemAvailableMb),
                             int(data.hivesync_min_memory_mb), int(data.hivesync_stack_memory_mb))
    if data.hivesync_memory_policy == "fail":
        problems += memory
    for problem in memory if data.hivesync_memory_policy != "fail" else []:
        host.log(f"warning: {problem}", log_func=logger.warning)
    if problems:
        raise PreflightFailed(f"preflight failed on {host.name}: " + "; ".join(problems))


def server(data, release: tuple[str, dict] | None = None):
    """`release`: (action, meta) of a rollback (the image pinned by data); None: a deploy."""
    action, meta = release or ("deploy", release_meta(data))
    server_preflight(data)
    firewall(data.firewall_allow_tcp)
    # a build an earlier apply left running removes its upload when it ends: let it end first
    wait_for_step(name=f"{BUILD_UNIT}.service: wait for an unfinished build", unit=BUILD_UNIT)
    docker_host(hold_restart_for=(BUILD_UNIT,))  # never restart dockerd under a running build
    backend_image_step(data, f"{data.hivesync_dir}/build", unit=BUILD_UNIT)
    files.put(name=f"{data.hivesync_dir}/bin/hivesync-status (make hivesync-status)", src=StringIO(status_script(data)),
              dest=f"{data.hivesync_dir}/bin/hivesync-status", mode="755")
    compose = render_compose(data)
    # before the env file changes: the backup keeps the compose and env files a rollback restores
    image, stamp = backend_image(data), time.strftime("%Y%m%dT%H%M%S")
    _, backed_up = release_change(data, compose, image)
    backup = backup_before_release(name="Database backup before a backend release change", compose=compose,
                                   image=image, stamp=stamp)
    _, env = environment(data)
    compose_stack(
        name=f"Compose stack {data.hivesync_compose_project} (backend, postgres, redis)",
        project=data.hivesync_compose_project,
        directory=data.hivesync_dir,
        compose=compose,
        compose_file=data.hivesync_compose_file,
        env_file=data.hivesync_env_file,
        services=SERVICES,
        # a new image under the same tag changes no file: the backup op (which runs exactly
        # when the wanted image differs from the running one) makes compose recreate it
        recreate_when=(env, backup),
    )
    gate_or_rollback(
        name="Backend healthy and its database schema checked (else roll back)",
        upgraded=backup.did_change, timeout_s=data.hivesync_health_timeout_s, interval_s=data.health_interval_s,
        defer=True,
    )
    https_site(data.hivesync_nginx_site, vhosts(data), [data.hivesync_domain], data)
    # the first deploy's gate does not block nginx/TLS; this one fails such a run
    gate_or_rollback(
        name="Backend healthy (final gate)", upgraded=lambda: False, timeout_s=data.hivesync_health_timeout_s,
        interval_s=data.health_interval_s, schema=False,
    )
    files.put(name=f"{data.hivesync_dir}/DEPLOYED (what serves now)", src=StringIO(deployed_record(data, meta)),
              dest=f"{data.hivesync_dir}/DEPLOYED", mode="644")
    release_recorded(name=f"Release history: {meta['image']} live", root=data.hivesync_dir, meta=meta, action=action,
                     backup=dump_path(data, stamp) if backed_up else None)
    if data.hivesync_external_check:
        external_check(data)


def rollback(data, series: releases.Series, target: dict) -> None:
    """`make rollback DEPLOY=hivesync [TO=id]`: the kept release's image (its recorded id
    retagged), then the server role with that image pinned: backup, gate (a failing
    target rolls back to what served), DEPLOYED and a `rollback` history line."""
    rid = target["components"][COMPONENT]
    meta = releases.read(series.root, list(series.names))["components"][COMPONENT]["releases"][rid]["meta"]
    host.log(f"rolling the HiveSync backend back to release {target['id']} ({meta['image']}, deployed "
             f"{target.get('at')}, commit {(meta.get('commit') or '-')[:12]})")
    image_retagged(name=f"{meta['image']}: the image of release {target['id']}", image=meta["image"],
                   image_id=meta.get("image_id"))
    kept = {k: v for k, v in meta.items() if k != "image_id"}
    server(Overlay(data, hivesync_backend_image=meta["image"]), release=("rollback", kept))


# ----------------------------------------------------------------------------- local Docker (N.2.2)
# The operator's machine (@local; in tests a disposable host reached over SSH as an
# ordinary user): the server's compose stack (stack(): the same services, images, volumes,
# healthchecks, loopback ports), built and run as the operator, without ufw, nginx,
# certbot, root or systemd; files under hivesync_local_dir; workers stay on Cloudflare.


def local_docker(data):
    ident = host.get_fact(Identity)
    action = data.hivesync_local_action
    data = local_layout(data, ident.get("home") or "~")
    if problems := local_problems(data, ident, action):
        raise PreflightFailed(f"preflight failed on {host.name}: " + "; ".join(problems))
    project, directory = data.hivesync_compose_project, data.hivesync_dir
    where = dict(project=project, directory=directory, compose_file=data.hivesync_compose_file,
                 env_file=data.hivesync_env_file, services=SERVICES, **LOCAL_HINT)
    if action == "status":
        local_status(name="Status", data=data)
        return
    if action == "stop":
        local_compose(name=f"Compose project {project} stopped", action="stop", **where)
        return
    if action == "deploy":
        files.directory(name=directory, path=directory, mode="700")
        backend_image_step(data, f"{directory}/build", unit=None, where="here")
        _, env = local_environment(data, ident)
        compose_stack(name=f"Compose stack {project} (backend, postgres, redis)", project=project,
                      directory=directory, compose=render_compose(data), compose_file=data.hivesync_compose_file,
                      env_file=data.hivesync_env_file, services=SERVICES, recreate_when=(env,))
    else:
        local_compose(name=f"Compose project {project} started", action="start", **where)
    wait_until(name="Backend healthy and its database schema checked", check=stack_check(data),
               description=f"compose project {project}", timeout_s=data.hivesync_health_timeout_s,
               interval_s=data.health_interval_s)
    if action == "deploy":
        files.put(name=f"{directory}/DEPLOYED (what runs now)", src=StringIO(deployed_record(data)),
                  dest=f"{directory}/DEPLOYED", mode="644")


# ----------------------------------------------------------------------------- local development (N.2.1)
# The operator's machine, as the operator: the backend from their checkout in a venv
# (uvicorn --reload), postgres and redis from the server's stack in Docker on loopback, and
# each worker under `wrangler dev --env dev` with its dev secrets in .dev.vars (0600);
# processes with PID files (deploys/parts/procs.py), start/stop/status like local Docker.


def local_dev(data):
    ident = host.get_fact(Identity)
    action = data.hivesync_local_action
    data = dev_layout(data, ident.get("home") or "~")
    problems = local_problems(data, ident, "start" if action == "deploy" else action)
    requirements = f"{data.hivesync_dev_checkout}/requirements.txt"
    digest = host.get_fact(Sha256File, path=requirements)
    if action == "deploy" and not digest:
        problems.append(f"{requirements} is missing: hivesync_dev_checkout ({data.hivesync_dev_checkout}) is not "
                        "a HiveSync checkout on this machine")
    if action == "deploy" and (missing := secrets.missing(list(data.required_secrets), secrets.load())):
        problems.append(f"missing or placeholder secrets: {', '.join(missing)}")
    if problems:
        raise PreflightFailed(f"preflight failed on {host.name}: " + "; ".join(problems))
    venv = f"{dev_dir(data)}/venv"
    workers = dev_workers(data)
    specs = dev_specs(data, venv, workers)
    project = data.hivesync_compose_project
    where = dict(project=project, directory=data.hivesync_dir, compose_file=data.hivesync_dev_compose_file,
                 env_file=data.hivesync_env_file, services=DEV_SERVICES, app="HiveSync local development",
                 deploy_hint="make hivesync-local-up HS_TARGET=dev first")
    if action == "status":
        status_report(name="Status", specs=specs, mode="pidfile",
                      title=f"HiveSync local development ({data.hivesync_dev_checkout}; compose project {project})")
        local_status(name="postgres, redis", data=data, services=DEV_SERVICES)
        return
    if action == "stop":
        for spec in specs:
            pid_process_stopped(name=f"{spec.id} stopped", spec=spec)
        local_compose(name=f"Compose project {project} stopped", action="stop", **where)
        return
    changed: dict = {}
    if action == "deploy":
        files.directory(name=data.hivesync_dir, path=data.hivesync_dir, mode="700")
        files.directory(name=dev_dir(data), path=dev_dir(data), mode="700")
        user, env = dev_environment(data, ident)
        compose_stack(name=f"Compose stack {project} (postgres, redis)", project=project, directory=data.hivesync_dir,
                      compose=dev_compose(data), compose_file=data.hivesync_dev_compose_file,
                      env_file=data.hivesync_env_file, services=DEV_SERVICES, recreate_when=(env,))
        venv_op = dev_venv(name=f"venv {venv} from {requirements}", venv=venv, python=data.hivesync_dev_python,
                           venv_args=list(data.hivesync_dev_venv_args or []), requirements=requirements,
                           digest=digest, pip_args=list(data.hivesync_dev_pip_args or []))
        changed["backend"] = [user, env, venv_op]
        for worker in workers:
            changed[worker] = dev_worker_files(data, worker, ident)
    else:
        local_compose(name=f"Compose project {project} started", action="start", **where)
    wait_until(name="postgres and redis healthy", check=compose_check(project, DEV_SERVICES),
               description=f"compose project {project}", timeout_s=data.hivesync_health_timeout_s,
               interval_s=data.health_interval_s)
    for spec in specs:
        if changed.get(spec.id):  # new env, venv, config or dev secrets: restart (the code reloads itself)
            pid_process_stopped(name=f"{spec.id} restarted for its new configuration", spec=spec,
                                _if=any_changed(*changed[spec.id]))
        pid_process_running(name=f"{spec.id} running ({spec.description})", spec=spec,
                            start_timeout_s=data.hivesync_dev_start_timeout_s)
    wait_until(name="Backend healthy and its database schema checked", check=dev_check(data),
               description=f"{backend_url(data)}", timeout_s=data.hivesync_health_timeout_s,
               interval_s=data.health_interval_s)


# ----------------------------------------------------------------------------- workstation role


@operation()
def refuse(message: str):
    """Fail this host only, with one message (raising at prepare time would stop every host)."""
    yield fail_command(message)


def workers(data):
    if problems := workers_problems(data):
        refuse(name="HiveSync workers: preflight", message=f"preflight failed on {host.name}: " + "; ".join(problems))
        return
    values = secrets.get(list(data.hivesync_worker_secrets))
    state_dir = str(data.hivesync_workers_state_dir)
    home = host.get_fact(Home) or "~"
    state_dir = state_dir.replace("~", home, 1) if state_dir.startswith("~") else state_dir
    files.directory(name=state_dir, path=state_dir, mode="700")
    wrangler, deploy_env = data.hivesync_wrangler, data.hivesync_wrangler_deploy_env
    r2_bucket(name=f"R2 bucket {data.hivesync_r2_bucket}", bucket=data.hivesync_r2_bucket, wrangler=wrangler)
    r2_placeholders(name=f"R2 bucket {data.hivesync_r2_bucket}: {', '.join(data.hivesync_r2_prefixes)}",
                    bucket=data.hivesync_r2_bucket, prefixes=list(data.hivesync_r2_prefixes),
                    record=f"{state_dir}/.r2-{data.hivesync_r2_bucket}.placeholders", wrangler=wrangler)
    for worker, spec in data.hivesync_workers.items():
        if not spec.get("enabled", True):
            continue
        directory = f"{state_dir}/{worker}"
        toml, sources, _ = stage_worker(data, worker, directory)
        if not worker_routes(spec) and not spec.get("crons"):
            logger.warning(f"worker {worker}: no routes and no cron triggers in hivesync_workers: deployed, "
                           "but nothing reaches it (workers_dev is off)")
        wrangler_deploy(name=f"wrangler deploy {worker} (when changed)", worker=worker, directory=directory,
                        digest=worker_digest(toml, sources), wrangler=wrangler, deploy_env=deploy_env)
        for name in data.hivesync_worker_secrets:
            wrangler_secret(name=f"wrangler secret put {name} ({worker})", worker=worker, directory=directory,
                            secret_name=name, value=values[name], wrangler=wrangler, deploy_env=deploy_env,
                            salt=SECRET_SALT)


def release_actions(data) -> bool:
    """`make releases` / `make rollback` (release_action): the server role's backend
    images; other roles have none (nothing done there). False: a normal run."""
    action = data.get("release_action")
    if action in (None, ""):
        return False
    if action not in releases.RELEASE_ACTIONS:
        raise ConfigError(f"release_action {action!r} is not one of {', '.join(releases.RELEASE_ACTIONS)}")
    if data.hivesync_role not in (None, "", "server"):
        host.noop(f"release_action={action}: the {data.hivesync_role} role has no releases (the server's backend has)")
        return True
    try:
        return releases.release_action(action, release_series(data), data.get("release_to"),
                                       lambda series, target: rollback(data, series, target))
    except ConfigError as exc:
        raise ConfigError(f"hivesync {exc}") from None


def main(data):
    check_config(data)
    if release_actions(data):
        return
    if data.hivesync_role == "workstation":
        workers(data)
    elif data.hivesync_role == "local_docker":
        local_docker(data)
    elif data.hivesync_role == "local_dev":
        local_dev(data)
    else:
        server(data)


# (`ctx_host.isset()`: unit tests import this module's helpers outside a pyinfra run.)
if ctx_host.isset() and "hivesync" in host.groups:
    deploy_lock.guarded("hivesync", main, host.data)  # one run at a time on this host, and its record
