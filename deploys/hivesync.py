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
hivesync-status). On a first deploy (nothing to roll back to)
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
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import shlex
import time
from io import BytesIO, StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.context import ctx_host, state
from pyinfra.facts.files import File, FileContents, Sha256File
from pyinfra.facts.server import Home
from pyinfra.operations import files
from pyinfra.operations.util import any_changed

from deploys import secrets
from deploys.parts import deploy_lock
from deploys.env_schema import BACKEND, ELSEWHERE, WORKERS, env_problems, env_text, production, url_problem
from deploys.errors import ConfigError, PreflightFailed
from deploys.operations import poll, secret_file, wait_until
from deploys.parts.compose import (cli_args, compose_check, compose_stack, detected_cli, env_file_text, fail_command,
                                   to_yaml)
from deploys.parts.docker_host import docker_host
from deploys.parts.firewall import firewall, normalise_rules
from deploys.parts.generated_env import env_spec, stack_env, user_secrets
from deploys.parts.preflight import collect_problems, memory_problems
from deploys.parts.procs import ProcSpec, pid_process_running, pid_process_stopped, status_report
from deploys.parts.source_image import Source, content_tag, read_source, source_image
from deploys.parts.health import external_https_check
from deploys.parts.host_steps import wait_for_step
from deploys.parts.tls import https_site
from deploys.templating import render
from facts.http import HttpHealth, describe
from facts.compose import ComposeServices
from facts.hivesync import AlembicAtHead, ContainerImage, DatabaseSchema, DockerServer, R2Buckets, missing_tables
from facts.procs import Identity
from facts.sockets import ListeningSockets
from facts.system import FreeDiskMb, MemAvailableMb, MemTotalMb

logger = logging.getLogger("pyinfra")
REPO = Path(__file__).resolve().parent.parent
SERVICES = ("backend", "postgres", "redis")
CONTAINER = {s: f"hivesync-{s}" for s in SERVICES}
ROLES = ("server", "workstation", "local_docker", "local_dev")
LOCAL_ACTIONS = ("deploy", "start", "stop", "status")
WRANGLER_TEMPLATE = "home/.local/state/hivesync/workers/wrangler.toml.j2"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_WORKER = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")
_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$")

BUILD_UNIT = "hivesync-build"  # the backend image build runs as this transient systemd unit


def _local(path: str | None) -> Path | None:
    """A local path from data: relative paths are relative to the repository."""
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO / p


def _lit(value) -> str:
    """A literal value in the compose file: `$` must not start an interpolation."""
    return str(value).replace("$", "$$")


# ----------------------------------------------------------------------------- config


def config_problems(data) -> list[str]:
    """Every malformed knob, named (checked before anything connects)."""
    problems = []
    if data.hivesync_role not in ROLES:
        problems.append(f"hivesync_role {data.hivesync_role!r} is not one of {ROLES}")
    if not _DOMAIN.match(str(data.hivesync_domain or "")):
        problems.append(f"hivesync_domain {data.hivesync_domain!r} is not a DNS name")
    try:
        if not ipaddress.ip_address(str(data.hivesync_bind_address)).is_loopback:
            problems.append(f"hivesync_bind_address {data.hivesync_bind_address} is not a loopback address "
                            "(nginx is the only public entry)")
    except ValueError:
        problems.append(f"hivesync_bind_address {data.hivesync_bind_address!r} is not an IP address")
    problems += backend_problems(data)
    ports = {"hivesync_backend_port": data.hivesync_backend_port, "hivesync_postgres_port": data.hivesync_postgres_port,
             "hivesync_redis_port": data.hivesync_redis_port}
    for knob, port in ports.items():
        if port is None and knob != "hivesync_backend_port":
            continue
        if not isinstance(port, int) or not 0 < port < 65536 or port in (80, 443):
            problems.append(f"{knob} = {port!r} is not a free TCP port (80/443 are nginx's)")
    for knob in ("hivesync_compose_project", "hivesync_postgres_volume", "hivesync_redis_volume"):
        if not _NAME.match(str(getattr(data, knob) or "")):
            problems.append(f"{knob} {getattr(data, knob)!r} is not a valid docker name")
    if not (data.hivesync_backend_image or data.hivesync_backend_source):
        problems.append("neither hivesync_backend_source (a checkout to build on the host) nor "
                        "hivesync_backend_image (a ready image) is set")
    if not _NAME.match(str(data.hivesync_backend_repository or "")):
        problems.append(f"hivesync_backend_repository {data.hivesync_backend_repository!r} is not a docker image name")
    if not isinstance(data.hivesync_backend_keep_images, int) or data.hivesync_backend_keep_images < 2:
        problems.append(f"hivesync_backend_keep_images {data.hivesync_backend_keep_images!r}: keep at least 2 "
                        "(the previous image is the rollback)")
    for key, value in (data.hivesync_backend_build_args or {}).items():
        if not _ENV_KEY.match(str(key)) or any(c in str(value) for c in "$%\n"):
            problems.append(f"hivesync_backend_build_args: {key}={value!r} (NAME=value, no '$', '%' or newline)")
    for service in SERVICES:
        if service != "backend" and not getattr(data, f"hivesync_{service}_image"):
            problems.append(f"hivesync_{service}_image is not set")
        test = (data.hivesync_healthchecks or {}).get(service)
        if service == "backend" and test is None:
            continue  # derived from the port and hivesync_backend_health_path
        if not (isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL")):
            problems.append(f"hivesync_healthchecks[{service!r}] must be a list starting with CMD or CMD-SHELL")
    env = data.hivesync_backend_env or {}
    secret_names = set(data.required_secrets) | set(data.hivesync_generated_secrets)
    for key in env:
        if not _ENV_KEY.match(str(key)):
            problems.append(f"hivesync_backend_env: {key!r} is not an environment variable name")
        if key in secret_names:
            problems.append(f"hivesync_backend_env: {key} is a secret; it comes from .env or is generated, never from data")
    if overlap := set(data.required_secrets) & set(data.hivesync_generated_secrets):
        problems.append(f"{sorted(overlap)} are both required from .env and generated on the host")
    if "POSTGRES_PASSWORD" not in secret_names:
        problems.append("POSTGRES_PASSWORD must be generated (hivesync_generated_secrets) or required")
    if data.hivesync_memory_policy not in ("warn", "fail"):
        problems.append(f"hivesync_memory_policy {data.hivesync_memory_policy!r} is not 'warn' or 'fail'")
    if data.hivesync_local_action not in LOCAL_ACTIONS:
        problems.append(f"hivesync_local_action {data.hivesync_local_action!r} is not one of {LOCAL_ACTIONS}")
    if data.hivesync_local_base_url and (problem := url_problem(str(data.hivesync_local_base_url), False)):
        problems.append(f"hivesync_local_base_url {problem}")
    if data.hivesync_role == "local_dev":
        if not (data.hivesync_postgres_port and data.hivesync_redis_port):
            problems.append("local_dev: hivesync_postgres_port and hivesync_redis_port must be published (the backend "
                            "runs outside compose)")
        command = data.hivesync_dev_backend_cmd
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)
                and any("{port}" in a for a in command)):
            problems.append(f"hivesync_dev_backend_cmd {command!r} must be a list of strings passing {{port}}")
    if data.hivesync_role == "server":
        try:
            normalise_rules(data.get("firewall_allow_tcp") or [])
        except ConfigError as exc:
            problems.append(str(exc))
    for worker, spec in (data.hivesync_workers or {}).items():
        if not _WORKER.match(worker):
            problems.append(f"hivesync_workers: {worker!r} is not a worker name (lowercase, digits, _)")
        problems += [f"hivesync_workers[{worker!r}]: {p}" for p in worker_spec_problems(spec)]
    if data.hivesync_wrangler_deploy_env not in (data.hivesync_wrangler_envs or []):
        problems.append(f"hivesync_wrangler_deploy_env {data.hivesync_wrangler_deploy_env!r} is not in "
                        f"hivesync_wrangler_envs {data.hivesync_wrangler_envs}")
    return problems


_ROUTE = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9.*-]*(/[A-Za-z0-9._~/*-]*)?$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,#?LW-]+$")


def worker_spec_problems(spec) -> list[str]:
    """A worker's data: main, enabled, routes (Cloudflare route patterns), crons."""
    if not isinstance(spec, dict):
        return [f"{spec!r} is not a table of main/enabled/routes/crons"]
    problems = [f"unknown key {k!r} (main, enabled, routes, crons)" for k in spec
                if k not in ("main", "enabled", "routes", "crons")]
    for route in worker_routes(spec) if isinstance(spec.get("routes") or [], list) else [{"pattern": None}]:
        pattern = route.get("pattern")
        if not (isinstance(pattern, str) and _ROUTE.match(pattern)) or set(route) - {"pattern", "zone_name",
                                                                                    "custom_domain"}:
            problems.append(f"route {route!r}: a pattern like 'example.com/api/*' (no scheme), optionally "
                            "zone_name or custom_domain")
    crons = spec.get("crons") or []
    for cron in crons if isinstance(crons, list) else [crons]:
        if not (isinstance(cron, str) and len(cron.split()) == 5 and all(map(_CRON_FIELD.match, cron.split()))):
            problems.append(f"cron {cron!r} is not a 5-field cron expression")
    return problems


def backend_problems(data) -> list[str]:
    """The knobs that must agree with the real backend (upstream c5680a2)."""
    problems = []
    command = data.hivesync_backend_command
    if command is not None and not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
        problems.append(f"hivesync_backend_command {command!r} must be a list of strings (or None: the image's CMD)")
    elif command is not None and not any("{port}" in a for a in command):
        problems.append("hivesync_backend_command must pass {port} (e.g. `--port {port}`): the port is set in one "
                        "place, hivesync_backend_port, and the image's own CMD hard-codes 4000")
    elif command is None and data.hivesync_backend_port != 4000:
        problems.append(f"hivesync_backend_port {data.hivesync_backend_port} needs hivesync_backend_command: "
                        "the image's CMD listens on 4000")
    problems += schema_problems(data)
    for knob in ("hivesync_backend_health_path", "hivesync_public_health_path", "hivesync_api_prefix"):
        if not re.match(r"^/[A-Za-z0-9._~/-]*$", str(getattr(data, knob) or "")):
            problems.append(f"{knob} {getattr(data, knob)!r} is not an absolute URL path")
    if not str(data.hivesync_api_prefix or "").endswith("/"):
        problems.append(f"hivesync_api_prefix {data.hivesync_api_prefix!r} must end with '/'")
    elif not str(data.hivesync_public_health_path or "").startswith(data.hivesync_api_prefix):
        problems.append(f"hivesync_public_health_path {data.hivesync_public_health_path!r} is not under "
                        f"hivesync_api_prefix {data.hivesync_api_prefix!r} (nginx publishes only that prefix)")
    if data.hivesync_migrations not in ("auto", "alembic", "tables"):
        problems.append(f"hivesync_migrations {data.hivesync_migrations!r} is not 'auto', 'alembic' or 'tables'")
    if data.hivesync_missing_tables not in ("warn", "fail"):
        problems.append(f"hivesync_missing_tables {data.hivesync_missing_tables!r} is not 'warn' or 'fail'")
    return problems


def schema_problems(data) -> list[str]:
    """deploys/env_schema.py on the effective data: the backend's variables as given, the
    workers' as derived (production: their URLs must be https)."""
    https = production()
    models = list(data.hivesync_ai_models or [])
    problems = env_problems(dict(data.hivesync_backend_env or {}), BACKEND, models, https, elsewhere=ELSEWHERE)
    if data.hivesync_r2_endpoint and (problem := url_problem(str(data.hivesync_r2_endpoint), https)):
        problems.append(f"hivesync_r2_endpoint {problem}")
    if _DOMAIN.match(str(data.hivesync_domain or "")):
        for env in worker_envs(data):
            problems += env_problems(env["vars"], WORKERS, models, https and env["name"] == "production",
                                     knob=f"worker variables [env.{env['name']}]")
    return problems


def check_config(data) -> None:
    if problems := config_problems(data):
        raise ConfigError("hivesync: " + "; ".join(problems))


# ----------------------------------------------------------------------------- the stack


_SOURCES: dict = {}


def backend_source(data) -> Source | None:
    """The checkout the backend image is built from (None: a ready image is used), read
    once per run; ConfigError when it is missing or the ref is unknown."""
    if data.hivesync_backend_image:
        return None
    key = (str(_local(data.hivesync_backend_source)), data.hivesync_backend_ref)
    if key not in _SOURCES:
        try:
            _SOURCES[key] = read_source(_local(data.hivesync_backend_source), data.hivesync_backend_ref)
        except ConfigError as exc:
            raise ConfigError(f"hivesync_backend_source: {exc}") from None
    return _SOURCES[key]


def backend_image(data) -> str:
    """hivesync_backend_image, else the content tag of the build from the source."""
    if data.hivesync_backend_image:
        return data.hivesync_backend_image
    return content_tag(data.hivesync_backend_repository, backend_source(data), data.hivesync_backend_dockerfile,
                       dict(data.hivesync_backend_build_args or {}))


def deployed_record(data) -> str:
    """<dir>/DEPLOYED: what serves now (written after the final gate; make hivesync-status)."""
    source = backend_source(data)
    lines = [f"image {backend_image(data)}"]
    if source is None:
        lines += ["commit - (a ready image: hivesync_backend_image)", "source -"]
    else:
        lines += [f"commit {source.commit or '-'}{'+dirty' if source.dirty else ''}",
                  f"ref {source.ref or '-'}", f"source {source.root}"]
    return "\n".join(lines) + "\n"


def status_script(data) -> str:
    return render("opt/hivesync/bin/hivesync-status.j2", dir=data.hivesync_dir, project=data.hivesync_compose_project,
                  repository=data.hivesync_backend_repository, health_url=backend_url(data))


def base_url(data) -> str:
    return f"https://{data.hivesync_domain}"


def backend_base_url(data) -> str:
    """BASE_URL the backend gets: https://<domain> on the Linode; on the operator's
    machine (local roles) hivesync_local_base_url, else the published loopback port."""
    if data.hivesync_role in ("local_docker", "local_dev"):
        return data.hivesync_local_base_url or f"http://{data.hivesync_bind_address}:{data.hivesync_backend_port}"
    return base_url(data)


def container_port(data) -> int:
    """One setting: the host port, the container port, `--port` of the command and PORT."""
    return int(data.hivesync_backend_port)


def backend_command(data) -> list[str] | None:
    """hivesync_backend_command with {port} filled in (None: the image's CMD)."""
    command = data.hivesync_backend_command
    return None if command is None else [a.replace("{port}", str(container_port(data))) for a in command]


def backend_url(data, path: str | None = None) -> str:
    """The backend as the host sees it (published on the loopback bind address)."""
    return f"http://{data.hivesync_bind_address}:{data.hivesync_backend_port}{path or data.hivesync_backend_health_path}"


def _healthcheck(data, service: str) -> dict:
    test = (data.hivesync_healthchecks or {}).get(service)
    if test is None:  # backend: python3 is in the app's image (python:3.11-slim)
        url = f"http://127.0.0.1:{container_port(data)}{data.hivesync_backend_health_path}"
        test = ["CMD-SHELL", f"python3 -c \"import urllib.request; urllib.request.urlopen('{url}', timeout=4)\""]
    return {"test": list(test), **(data.hivesync_healthcheck_timing or {})}


def _healthy(*services: str) -> dict:
    return {s: {"condition": "service_healthy"} for s in services}


def stack(data) -> dict:
    """backend + postgres + redis; every published port on the loopback bind address."""
    bind, env = data.hivesync_bind_address, data.hivesync_backend_env
    backend = {
        "image": _lit(backend_image(data)),
        "container_name": CONTAINER["backend"],
        "restart": "unless-stopped",
        # .env.production: the app's settings (backend/app/config.py: data + secrets); the
        # backend creates its tables itself at start-up (create_all, or Alembic when it has it).
        "env_file": [data.hivesync_env_file],
        "ports": [f"{bind}:{data.hivesync_backend_port}:{container_port(data)}"],
        "depends_on": _healthy("postgres", "redis"),
        "healthcheck": _healthcheck(data, "backend"),
    }
    if command := backend_command(data):
        backend["command"] = [_lit(a) for a in command]
    postgres = {
        "image": _lit(data.hivesync_postgres_image),
        "container_name": CONTAINER["postgres"],
        "restart": "unless-stopped",
        "environment": {
            "POSTGRES_USER": _lit(env["POSTGRES_USER"]),
            "POSTGRES_DB": _lit(env["POSTGRES_DB"]),
            "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}",
        },
        "volumes": ["postgres-data:/var/lib/postgresql/data"],
        "healthcheck": _healthcheck(data, "postgres"),
    }
    redis = {
        "image": _lit(data.hivesync_redis_image),
        "container_name": CONTAINER["redis"],
        "restart": "unless-stopped",
        "command": [_lit(a) for a in data.hivesync_redis_command],
        "volumes": ["redis-data:/data"],
        "healthcheck": _healthcheck(data, "redis"),
    }
    if data.hivesync_postgres_port:
        postgres["ports"] = [f"{bind}:{data.hivesync_postgres_port}:{int(env['POSTGRES_PORT'])}"]
    if data.hivesync_redis_port:
        redis["ports"] = [f"{bind}:{data.hivesync_redis_port}:{int(env['REDIS_PORT'])}"]
    return {
        "services": {"backend": backend, "postgres": postgres, "redis": redis},
        "volumes": {
            "postgres-data": {"name": data.hivesync_postgres_volume},
            "redis-data": {"name": data.hivesync_redis_volume},
        },
    }


def render_compose(data) -> str:
    header = (
        "Managed by pyinfra (deploys/hivesync.py, data: group_data/hivesync.py): local edits are overwritten.\n"
        f"HiveSync backend + postgres + redis; published ports on {data.hivesync_bind_address} only.\n"
        f"Secrets: {data.hivesync_env_file} (0600). Here: docker compose ps | logs -f backend."
    )
    return to_yaml(stack(data), header=header)


def backend_env(data) -> dict:
    """The app's non-secret settings (BASE_URL from the domain, PORT from the one port knob)."""
    values = {"BASE_URL": backend_base_url(data), "PORT": str(container_port(data)), "R2_BUCKET": data.hivesync_r2_bucket}
    values.update({k: env_text(v) for k, v in data.hivesync_backend_env.items()})
    return values


def r2_endpoint(data, account_id: str) -> str:
    """R2_ENDPOINT (config.py): the knob, else the account's S3 endpoint."""
    return data.hivesync_r2_endpoint or f"https://{account_id}.r2.cloudflarestorage.com"


def backend_values(data) -> dict:
    """Everything user.env holds: data, the required secrets, the optional ones that are
    set, and R2_ENDPOINT (derived from R2_ACCOUNT_ID unless set)."""
    found = user_secrets(data, optional=data.hivesync_optional_secrets or [])
    values = {"COMPOSE_PROJECT_NAME": data.hivesync_compose_project, **backend_env(data), **found}
    account = found.get("R2_ACCOUNT_ID")
    if "R2_ENDPOINT" not in values and account is not None:
        values["R2_ENDPOINT"] = HiddenValue(r2_endpoint(data, account.unmask()))
    return values


def hivesync_env_spec(data) -> dict:
    """For the host-side env script: generated secrets + the operator's values."""
    d = data.hivesync_secrets_dir
    return env_spec(
        secrets_dir=d, target=f"{data.hivesync_dir}/{data.hivesync_env_file}",
        random=dict(data.hivesync_generated_secrets),
        header=(
            "Managed by pyinfra (deploys/hivesync.py): the backend's .env.production. Do not edit:\n"
            f"{', '.join(data.hivesync_generated_secrets)} come from {d}/generated.env (made once on\n"
            f"this host), the rest from {d}/user.env (data + the operator's .env).\n"
        ),
    )


@deploy("Environment file (.env.production)")
def environment(data):
    values = backend_values(data)
    spec = hivesync_env_spec(data)
    files.directory(name=data.hivesync_secrets_dir, path=data.hivesync_secrets_dir, user="root", group="root",
                    mode="700")
    files.directory(name=data.hivesync_dir, path=data.hivesync_dir, user="root", group="root", mode="755")
    user = secret_file(name=f"{spec['user']} (data + secrets from .env)", dest=spec["user"],
                       content=HiddenValue(env_file_text(values)))
    env = stack_env(name=f"{spec['target']} (generated once on the host + {spec['user']})", spec=spec)
    return user, env


# ----------------------------------------------------------------------------- backup / gate


def _psql(data, sql: str) -> list:
    env = data.hivesync_backend_env
    return ["docker exec", QuoteString(CONTAINER["postgres"]), "psql -XAtq -U", QuoteString(env["POSTGRES_USER"]),
            "-d", QuoteString(env["POSTGRES_DB"]), "-c", QuoteString(sql)]


REVISION_SQL = "SELECT version_num FROM alembic_version"
# The schema's fingerprint (tables, columns, types): create_all and Alembic both change it.
SCHEMA_SQL = ("SELECT count(DISTINCT table_name) || 't-' || left(md5(coalesce(string_agg(table_name || '.' || "
              "column_name || ':' || data_type, ',' ORDER BY table_name, column_name), '')), 12) "
              "FROM information_schema.columns WHERE table_schema = 'public'")


def db_state_shell(data, var: str) -> list:
    """Shell words setting $var to `<schema fingerprint>@<Alembic revision or ->`: what a
    rollback compares to decide whether the failed release changed the database."""
    return [f"{var}_s=$(", *_psql(data, SCHEMA_SQL), "2>/dev/null);",
            f"{var}_r=$(", *_psql(data, REVISION_SQL), "2>/dev/null | tr -s '\\n' ',');",
            f'{var}="${{{var}_s:-?}}@${{{var}_r%,}}"; {var}="${{{var}%@}}";',
            f'case "${var}" in *@*) ;; *) {var}="${var}@-";; esac;']


def backup_command(data, stamp: str, running: dict) -> StringCommand:
    """pg_dump (custom format) of the live DB, verified with pg_restore --list, plus what a
    rollback needs in <dir>/.previous-image: the image id + name running now, the DB's
    state (schema fingerprint + Alembic revision if any) and the dump (restored when the
    failed release changed the database); the compose and env files as they are now."""
    env = data.hivesync_backend_env
    base, backups = data.hivesync_dir, data.hivesync_backup_dir
    dump = f"{backups}/hivesync-{stamp}.dump"
    compose = f"{base}/{data.hivesync_compose_file}"
    env_path = f"{base}/{data.hivesync_env_file}"
    return StringCommand(
        "set -e;", "umask 077;", "mkdir -p", QuoteString(backups), ";", "chmod 700", QuoteString(backups), ";",
        "docker exec", QuoteString(CONTAINER["postgres"]), "pg_dump -U", QuoteString(env["POSTGRES_USER"]),
        "-d", QuoteString(env["POSTGRES_DB"]), "-Fc >", QuoteString(dump + ".tmp"), ";",
        "tables=$(docker exec -i", QuoteString(CONTAINER["postgres"]), "pg_restore --list <", QuoteString(dump + ".tmp"),
        "| grep -c ' TABLE ' || true);",
        'if [ "$tables" -lt 1 ]; then echo', QuoteString(f"backup {dump} holds no table: refusing to change the image"),
        ">&2; rm -f", QuoteString(dump + ".tmp"), "; exit 1; fi;",
        "mv", QuoteString(dump + ".tmp"), QuoteString(dump), ";",
        *db_state_shell(data, "dbstate"),
        "cp -p", QuoteString(compose), QuoteString(f"{compose}.previous"), ";",
        "cp -p", QuoteString(env_path), QuoteString(f"{env_path}.previous"), ";",
        "echo", QuoteString(f"{running['running_id']} {running['running_name']}"), '"$dbstate"',
        QuoteString(dump), ">", QuoteString(f"{base}/.previous-image"), ";",
        "echo", QuoteString(f"backup {dump}: "), '"$tables tables, database $dbstate";',
        "ls -1t", QuoteString(backups), "| grep '^hivesync-.*\\.dump$' | tail -n +" + str(int(data.hivesync_keep_backups) + 1),
        "| sed", QuoteString(f"s#^#{backups}/#"), "| xargs -r rm -f",
    )


@operation()
def backup_before_release(compose: str):
    """A verified pg_dump and the current files before the release changes: a new image
    or a new compose file (port, command, ...). First deploy: nothing to save."""
    data = host.data
    image = backend_image(data)
    current = host.get_fact(ContainerImage, container=CONTAINER["backend"], image=image)
    if not current["running_id"]:
        host.noop("no backend running yet: nothing to back up")
        return
    path = f"{data.hivesync_dir}/{data.hivesync_compose_file}"
    same_image = current["wanted_id"] and current["wanted_id"] == current["running_id"]
    same_compose = host.get_fact(Sha256File, path=path) == hashlib.sha256(compose.encode()).hexdigest()
    if same_image and same_compose:
        host.noop(f"backend already runs {image} from this compose file")
        return
    what = "compose file changes" if same_image else f"image changes ({current['running_name']} -> " \
        f"{image})"
    host.log(f"backend {what}: pg_dump first")
    yield backup_command(data, time.strftime("%Y%m%dT%H%M%S"), current)


def schema_check(data) -> tuple[bool, str]:
    """Alembic at head when the backend has an alembic.ini (or hivesync_migrations says
    so); else the plan's required tables, missing ones a warning or an error by knob."""
    env = data.hivesync_backend_env
    schema = host.get_fact(DatabaseSchema, backend=CONTAINER["backend"], postgres=CONTAINER["postgres"],
                           user=env["POSTGRES_USER"], db=env["POSTGRES_DB"], alembic_ini=data.hivesync_alembic_ini)
    mode = data.hivesync_migrations
    if mode == "alembic" or (mode == "auto" and schema["alembic"]):
        alembic = host.get_fact(AlembicAtHead, container=CONTAINER["backend"],
                                current=list(data.hivesync_alembic_current), heads=list(data.hivesync_alembic_heads))
        if not alembic["at_head"]:
            return False, f"database not at Alembic head (current {alembic['current']}, heads {alembic['heads']})"
        return True, f"database at Alembic head {','.join(alembic['heads'])}"
    if schema["tables"] is None:
        return False, "cannot list the database's tables (psql in the postgres container failed)"
    missing = missing_tables(list(data.hivesync_required_tables), schema["tables"])
    how = "no alembic.ini in the backend: create_all" if mode == "auto" else "hivesync_migrations = 'tables'"
    if not missing:
        return True, f"{how}; the plan's {len(data.hivesync_required_tables)} tables present"
    message = f"tables of the plan missing: {', '.join(missing)} ({how}; {len(schema['tables'])} tables)"
    if data.hivesync_missing_tables == "fail":
        return False, message + "; hivesync_missing_tables = 'fail'"
    return True, "warning: " + message


def stack_check(data, schema: bool = True):
    """Ok when compose says healthy, the backend's health path answers 2xx and (with
    `schema`) the database passes `schema_check`."""
    services = compose_check(data.hivesync_compose_project, SERVICES)
    url = backend_url(data)

    def check():
        ok, observed = services()
        if not ok:
            return False, observed
        health = host.get_fact(HttpHealth, url=url)
        if not (health and health.get("ok")):
            return False, f"{url}: {describe(health)}"
        if not schema:
            return True, f"{observed}; {url} healthy"
        ok, database = schema_check(data)
        return ok, f"{observed}; {url} healthy; {database}" if ok else database

    return check


def rollback_command(data, reason: str) -> StringCommand:
    """Previous compose file + image back; when the failed release migrated the database,
    stop the backend and restore the dump taken before it; `up -d`, wait for health, fail."""
    env = data.hivesync_backend_env
    base = data.hivesync_dir
    compose = f"{base}/{data.hivesync_compose_file}"
    cli = detected_cli() or "docker compose"
    url = backend_url(data)
    env_path = f"{base}/{data.hivesync_env_file}"
    message = f"{reason}. Rolled back the backend to the previous release"
    impossible = QuoteString(f"{reason}. Rollback impossible, host left as the failed release left it: ")
    pg, user, db = QuoteString(CONTAINER["postgres"]), QuoteString(env["POSTGRES_USER"]), QuoteString(env["POSTGRES_DB"])
    return StringCommand(
        "cd", QuoteString(base), "&&", "read -r prev_id prev_name prev_state dump <", QuoteString(f"{base}/.previous-image"),
        "|| { printf '%s%s\\n'", impossible, "'no record of the previous image'", ">&2; exit 1; };",
        'docker tag "$prev_id" "$prev_name"',
        "|| { printf '%s%s\\n'", impossible, '"previous image $prev_id is gone"', ">&2; exit 1; };",
        "cp -p", QuoteString(f"{compose}.previous"), QuoteString(compose),
        "|| { printf '%s%s\\n'", impossible, "'the previous compose file is gone'", ">&2; exit 1; };",
        "if [ -e", QuoteString(f"{env_path}.previous"), "]; then cp -p", QuoteString(f"{env_path}.previous"),
        QuoteString(env_path), "; fi;",
        *db_state_shell(data, "now_state"), "restored='';",
        'if [ "$now_state" != "$prev_state" ]; then',
        "docker stop", QuoteString(CONTAINER["backend"]), ">/dev/null;",
        # Into an empty schema, in one transaction: `pg_restore --clean` would only drop what
        # the dump has, leaving the failed migration's new tables behind.
        # The SQL is extracted to a 0600 file first: a pg_restore that fails half-way must
        # never feed psql a truncated script after the DROP.
        'sql=$(mktemp) && docker exec -i', pg, 'pg_restore -f - < "$dump" > "$sql"',
        "&& { echo 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;'; cat \"$sql\"; }",
        "| docker exec -i", pg, "psql -q -v ON_ERROR_STOP=1 --single-transaction -U", user, "-d", db, ">/dev/null;",
        'rc=$?; rm -f "$sql";', 'if [ "$rc" -eq 0 ]; then',
        'restored=" and restored the database from $dump (the release had changed the database: ${prev_state} -> ${now_state})";',
        'else restored=" BUT restoring $dump FAILED: the database stays at ${now_state}";',
        "fi;",
        "fi;",
        *cli.split(), "-p", QuoteString(data.hivesync_compose_project), "-f", QuoteString(compose),
        "--env-file", QuoteString(f"{base}/{data.hivesync_env_file}"), "up -d --remove-orphans >&2;",
        "for i in $(seq 1 60); do python3 -c", QuoteString(f"import urllib.request; urllib.request.urlopen({url!r}, timeout=3)"),
        "2>/dev/null && break; sleep 2; done;",
        "printf '%s%s%s\\n'", QuoteString(message), '"$restored"',
        QuoteString(f" (dumps in {data.hivesync_backup_dir}); the run fails."), ">&2; exit 1",
    )


@operation(is_idempotent=True)
def gate_or_rollback(upgraded, timeout_s: float, interval_s: float, defer: bool = False, schema: bool = True):
    """Health gate; when it fails after this run changed the release, roll back.

    With `defer`, a failure that has nothing to roll back to (the first deploy) does not
    stop the run here: nginx and TLS still come up, and the final gate fails the run.
    """
    data = host.data
    description = f"compose project {data.hivesync_compose_project}"
    if not state.is_executing:
        host.noop(f"{description}: checked when the deploy runs")
        return
    ok, observed = poll(stack_check(data, schema=schema), timeout_s, interval_s)
    if ok:
        if "warning: " in observed:
            host.log(observed[observed.index("warning: "):], log_func=logger.warning)
        host.noop(f"{description}: {observed}")
        return
    reason = f"{description}: not healthy after {timeout_s:g}s; last observed: {observed}"
    if upgraded() and host.get_fact(File, path=f"{data.hivesync_dir}/.previous-image"):
        yield rollback_command(data, reason)
        return
    if defer:
        host.log(f"{reason}; no previous release to roll back to: setting up nginx/TLS, "
                 "the final health gate decides", log_func=logger.warning)
        host.noop(f"{description}: not healthy yet (first deploy)")
        return
    yield fail_command(reason)


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


def server(data):
    server_preflight(data)
    firewall(data.firewall_allow_tcp)
    # a build an earlier apply left running removes its upload when it ends: let it end first
    wait_for_step(name=f"{BUILD_UNIT}.service: wait for an unfinished build", unit=BUILD_UNIT)
    docker_host(hold_restart_for=(BUILD_UNIT,))  # never restart dockerd under a running build
    if source := backend_source(data):
        source_image(
            name=f"Backend image built on the host from {source.describe()}",
            source=source, tag=backend_image(data), repository=data.hivesync_backend_repository,
            directory=f"{data.hivesync_dir}/build", dockerfile=data.hivesync_backend_dockerfile,
            build_args=dict(data.hivesync_backend_build_args or {}), keep=data.hivesync_backend_keep_images,
            unit=BUILD_UNIT, timeout_s=data.hivesync_build_timeout_s,
        )
    files.put(name=f"{data.hivesync_dir}/bin/hivesync-status (make hivesync-status)", src=StringIO(status_script(data)),
              dest=f"{data.hivesync_dir}/bin/hivesync-status", mode="755")
    compose = render_compose(data)
    # before the env file changes: the backup keeps the compose and env files a rollback restores
    backup = backup_before_release(name="Database backup before a backend release change", compose=compose)
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
    files.put(name=f"{data.hivesync_dir}/DEPLOYED (what serves now)", src=StringIO(deployed_record(data)),
              dest=f"{data.hivesync_dir}/DEPLOYED", mode="644")
    if data.hivesync_external_check:
        external_check(data)


# ----------------------------------------------------------------------------- local Docker (N.2.2)
# The operator's machine (@local; in tests a disposable host reached over SSH as an
# ordinary user): the server's compose stack (stack(): the same services, images, volumes,
# healthchecks, loopback ports), built and run as the operator, without ufw, nginx,
# certbot, root or systemd; files under hivesync_local_dir; workers stay on Cloudflare.


class Overlay:
    """Host data with a few knobs replaced: the server's functions on the local layout."""

    def __init__(self, data, **values):
        self._data, self._values = data, values

    def __getattr__(self, key):
        return self._values[key] if key in self._values else getattr(self._data, key)

    def get(self, key, default=None):
        return self._values[key] if key in self._values else self._data.get(key, default)


def expand_home(path: str, home: str) -> str:
    """`~/x` -> `<home>/x`; a relative path is relative to the home directory."""
    path = str(path)
    if path in ("~", ""):
        return home
    path = path[2:] if path.startswith("~/") else path
    return path.rstrip("/") if path.startswith("/") else f"{home.rstrip('/')}/{path}".rstrip("/")


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


@operation()
def local_compose(action: str, project: str, directory: str, compose_file: str, env_file: str, services):
    """`stop` (containers and volumes stay) or `start` (`up -d` of the deployed files):
    nothing when every service already is as asked."""
    cli = detected_cli() or "docker compose"
    compose_path = f"{directory}/{compose_file}"
    running = host.get_fact(ComposeServices, project=project)
    up = [s for s in services if (running.get(s) or {}).get("state") == "running"]
    args = cli_args(cli, project, compose_path, f"{directory}/{env_file}")
    if action == "stop":
        if not up:
            host.noop(f"compose project {project}: stopped")
            return
        yield StringCommand("cd", QuoteString(directory), "&&", *args, "stop")
        return
    if not host.get_fact(File, path=compose_path):
        yield fail_command(f"HiveSync is not deployed on this machine yet ({compose_path} is missing): "
                           "make hivesync-local-up first")
        return
    if len(up) == len(list(services)):
        host.noop(f"compose project {project}: {len(up)} services running")
        return
    yield StringCommand("cd", QuoteString(directory), "&&", *args, "up", "-d")


@operation(is_idempotent=True)
def local_status(data, services=SERVICES):
    """Each service's state and health, the backend's health URL and what was deployed."""
    if not state.is_executing:
        host.noop("status is read when the deploy runs")
        return
    running = host.get_fact(ComposeServices, project=data.hivesync_compose_project)
    lines = [f"HiveSync local Docker in {data.hivesync_dir} (compose project {data.hivesync_compose_project})"]
    for service in services:
        info = running.get(service) or {}
        lines.append(f"  {service:<9} {info.get('state') or 'not created'}"
                     + (f" ({info['health']})" if info.get("health") else ""))
    if "backend" in services:
        health = host.get_fact(HttpHealth, url=backend_url(data))
        lines.append(f"  health    {backend_url(data)}: {describe(health)}")
        for line in host.get_fact(FileContents, path=f"{data.hivesync_dir}/DEPLOYED") or ["not deployed yet"]:
            lines.append(f"  deployed  {line}")
    for line in lines:
        host.log(line)
    host.noop("status reported")
    return
    yield  # pragma: no cover  (a generator that yields nothing)


def local_environment(data, ident: dict):
    """.env.production (0600, the operator's) from user.env (data + .env) and the secrets
    generated once in <dir>/secrets/generated.env: the server's env, the local BASE_URL."""
    spec = hivesync_env_spec(data)
    files.directory(name=data.hivesync_secrets_dir, path=data.hivesync_secrets_dir, mode="700")
    user = secret_file(name=f"{spec['user']} (data + secrets from .env)", dest=spec["user"],
                       content=HiddenValue(env_file_text(backend_values(data))), user=ident["user"],
                       group=ident["group"])
    env = stack_env(name=f"{spec['target']} (generated once here + {spec['user']})", spec=spec)
    return user, env


def local_docker(data):
    ident = host.get_fact(Identity)
    action = data.hivesync_local_action
    data = local_layout(data, ident.get("home") or "~")
    if problems := local_problems(data, ident, action):
        raise PreflightFailed(f"preflight failed on {host.name}: " + "; ".join(problems))
    project, directory = data.hivesync_compose_project, data.hivesync_dir
    where = dict(project=project, directory=directory, compose_file=data.hivesync_compose_file,
                 env_file=data.hivesync_env_file, services=SERVICES)
    if action == "status":
        local_status(name="Status", data=data)
        return
    if action == "stop":
        local_compose(name=f"Compose project {project} stopped", action="stop", **where)
        return
    if action == "deploy":
        files.directory(name=directory, path=directory, mode="700")
        if source := backend_source(data):
            source_image(
                name=f"Backend image built here from {source.describe()}",
                source=source, tag=backend_image(data), repository=data.hivesync_backend_repository,
                directory=f"{directory}/build", dockerfile=data.hivesync_backend_dockerfile,
                build_args=dict(data.hivesync_backend_build_args or {}), keep=data.hivesync_backend_keep_images,
                unit=None,
            )
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

DEV_SERVICES = ("postgres", "redis")


def dev_layout(data, home: str) -> Overlay:
    base = expand_home(data.hivesync_local_dir, home)
    checkout = data.hivesync_dev_checkout or str(_local(data.hivesync_backend_source))
    return Overlay(data, hivesync_dir=base, hivesync_secrets_dir=f"{base}/secrets", hivesync_env_file=".env.dev",
                   hivesync_dev_checkout=expand_home(checkout, home))


def dev_dir(data) -> str:
    """PID files, logs, the venv and the staged workers of local development."""
    return f"{data.hivesync_dir}/dev"


def dev_compose(data) -> str:
    """postgres + redis exactly as the server's stack has them (volumes, healthchecks,
    loopback ports): the backend runs from the checkout instead."""
    document = stack(data)
    document["services"] = {k: v for k, v in document["services"].items() if k in DEV_SERVICES}
    header = ("Managed by pyinfra (deploys/hivesync.py, role local_dev): postgres + redis of the server's stack\n"
              f"for the backend running from {data.hivesync_dev_checkout}. Local edits are overwritten.")
    return to_yaml(document, header=header)


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


@operation()
def dev_venv(venv: str, python: str, venv_args: list, requirements: str, digest: str, pip_args: list):
    """The checkout's requirements in a venv, rebuilt when requirements.txt changes (its
    digest is recorded last: a failed pip install is rebuilt next time)."""
    record = f"{venv}/.requirements.sha256"
    if _recorded(record) == digest:
        host.noop(f"venv {venv} follows {requirements} ({digest[:12]})")
        return
    log = f"{venv}.log"
    yield StringCommand(
        "rm -rf", QuoteString(venv), "&&", QuoteString(python), "-m venv", *[QuoteString(a) for a in venv_args],
        QuoteString(venv), "&& {", QuoteString(f"{venv}/bin/pip"), "install --disable-pip-version-check",
        *[QuoteString(a) for a in pip_args], "-r", QuoteString(requirements), ">", QuoteString(log), "2>&1",
        "|| { tail -n 30", QuoteString(log), ">&2; echo", QuoteString(f"pip install -r {requirements} failed"),
        ">&2; exit 1; }; } && echo", QuoteString(digest), ">", QuoteString(record),
    )


def dev_workers(data) -> list[str]:
    """The enabled workers that have source; none (a warning) when the checkout has no
    workers folder (upstream c5680a2): the backend still runs."""
    src = _local(data.hivesync_workers_src)
    enabled = [w for w, spec in data.hivesync_workers.items() if spec.get("enabled", True)]
    if src is None or not src.is_dir():
        logger.warning(f"no workers folder {src} (hivesync_workers_src): only the backend runs in dev mode")
        return []
    if missing := [w for w in enabled if not (src / w).is_dir()]:
        raise PreflightFailed(f"preflight failed on {host.name}: workers {', '.join(missing)} have no folder under "
                              f"{src}; disable them in hivesync_workers or add their source")
    return enabled


def dev_worker_files(data, worker: str, ident: dict) -> list:
    """Source, wrangler.toml ([env.dev]) and .dev.vars (the dev secrets, 0600): the
    operations whose change needs a restart of `wrangler dev`."""
    directory = f"{dev_dir(data)}/workers/{worker}"
    files.directory(name=f"{directory}/src", path=f"{directory}/src", mode="700")
    for path, rel in worker_sources(data, worker):
        files.put(name=f"{worker}: src/{rel}", src=str(path), dest=f"{directory}/src/{rel}", mode="644")
    toml = files.put(name=f"{worker}: wrangler.toml", src=StringIO(render_wrangler_toml(data, worker)),
                     dest=f"{directory}/wrangler.toml", mode="644")
    lock = _local(data.hivesync_workers_src) / worker / "package-lock.json"
    if lock.is_file():
        npm_ci(name=f"npm ci {worker} (when package-lock.json changed)", worker=worker, directory=directory,
               lock_digest=hashlib.sha256(lock.read_bytes()).hexdigest())
    values = secrets.get(list(data.hivesync_worker_secrets))
    text = "".join(f"{name}={values[name].unmask()}\n" for name in data.hivesync_worker_secrets)
    dev_vars = secret_file(name=f"{worker}: .dev.vars (dev secrets)", dest=f"{directory}/.dev.vars",
                           content=HiddenValue(text), user=ident["user"], group=ident["group"])
    return [toml, dev_vars]


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
                 env_file=data.hivesync_env_file, services=DEV_SERVICES)
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
        spec = hivesync_env_spec(data)
        spec["user"] = f"{data.hivesync_secrets_dir}/user-dev.env"
        files.directory(name=data.hivesync_secrets_dir, path=data.hivesync_secrets_dir, mode="700")
        user = secret_file(name=f"{spec['user']} (data + secrets from .env)", dest=spec["user"],
                           content=HiddenValue(env_file_text(backend_values(Overlay(
                               data, hivesync_backend_env=dev_backend_env(data))))),
                           user=ident["user"], group=ident["group"])
        env = stack_env(name=f"{spec['target']} (generated once here + {spec['user']})", spec=spec)
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


def dev_check(data):
    """The backend's health path answers 2xx and the database passes `schema_check`."""
    url = backend_url(data)

    def check():
        health = host.get_fact(HttpHealth, url=url)
        if not (health and health.get("ok")):
            return False, f"{url}: {describe(health)}"
        ok, database = schema_check(data)
        return ok, f"{url} healthy; {database}" if ok else database

    return check


# ----------------------------------------------------------------------------- workstation role


def script_name(worker: str) -> str:
    """Cloudflare script names: lowercase letters, digits and dashes."""
    return "hivesync-" + worker.replace("_", "-")


def worker_envs(data) -> list[dict]:
    """[env.dev] talks to the local backend (`wrangler dev`, role local_dev: no nginx, so
    without the /api prefix nginx strips); [env.production] to https://<domain>."""
    dev_path = data.hivesync_callback_path
    if data.hivesync_strip_api_prefix and dev_path.startswith(data.hivesync_api_prefix):
        dev_path = "/" + dev_path[len(data.hivesync_api_prefix):]
    urls = {"production": base_url(data) + data.hivesync_callback_path,
            "dev": (data.get("hivesync_dev_base_url") or "http://127.0.0.1:4000") + dev_path}
    return [
        {
            "name": env,
            "bucket": data.hivesync_r2_bucket,
            "vars": {
                "R2_BUCKET": data.hivesync_r2_bucket,
                "R2_PREFIXES": ",".join(data.hivesync_r2_prefixes),
                "WORKER_CALLBACK_URL": urls.get(env, urls["production"]),
                "AI_MODEL": str((data.hivesync_backend_env or {}).get("AI_MODEL", "")),
            },
        }
        for env in data.hivesync_wrangler_envs
    ]


def worker_routes(spec: dict) -> list[dict]:
    """A worker's routes (its `routes`: "host/path*" or {"pattern", "zone_name"|"custom_domain"})."""
    return [r if isinstance(r, dict) else {"pattern": r} for r in spec.get("routes") or []]


def render_wrangler_toml(data, worker: str) -> str:
    """Routes and cron triggers (the worker's data) go to the deploy env only; [env.dev]
    runs under `wrangler dev`."""
    spec = data.hivesync_workers[worker]
    deploy_env = data.hivesync_wrangler_deploy_env
    envs = [{**e, "script_name": f"{script_name(worker)}-{e['name']}",
             "routes": worker_routes(spec) if e["name"] == deploy_env else [],
             "crons": list(spec.get("crons") or []) if e["name"] == deploy_env else []}
            for e in worker_envs(data)]
    return render(WRANGLER_TEMPLATE, worker=worker, name=script_name(worker), main=f"src/{spec.get('main', 'index.js')}",
                  compatibility_date=data.hivesync_wrangler_compatibility_date, envs=envs,
                  r2_binding=data.hivesync_r2_binding, secrets=data.hivesync_worker_secrets)


def worker_sources(data, worker: str) -> list[tuple[Path, str]]:
    src = _local(data.hivesync_workers_src) / worker
    if not src.is_dir():
        raise ConfigError(f"hivesync: worker {worker}: no source directory {src} (hivesync_workers_src)")
    return [(p, p.relative_to(src).as_posix()) for p in sorted(src.rglob("*"))
            if p.is_file() and "node_modules" not in p.parts and not p.name.startswith(".env")]


def worker_digest(toml: str, sources: list[tuple[Path, str]]) -> str:
    digest = hashlib.sha256(toml.encode())
    for path, rel in sources:
        digest.update(b"\0" + rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def secret_digest(worker: str, name: str, value: str) -> str:
    """What the local record keeps of a pushed secret (never the value itself)."""
    return hashlib.sha256(f"hivesync-worker-secret\0{worker}\0{name}\0{value}".encode()).hexdigest()


def _recorded(path: str) -> str | None:
    lines = host.get_fact(FileContents, path=path)
    return lines[0].strip() if lines else None


def wrangler_argv(data, *args: str) -> list:
    return [QuoteString(data.hivesync_wrangler), *[QuoteString(a) for a in args]]


@operation()
def npm_ci(worker: str, directory: str, lock_digest: str):
    """`npm ci` in the staged worker when its package-lock.json changed (wrangler bundles
    node_modules); the lockfile's digest is recorded only after a good install."""
    data = host.data
    record = f"{directory}/.npm-ci.sha256"
    if _recorded(record) == lock_digest:
        host.noop(f"worker {worker}: node_modules follow package-lock.json ({lock_digest[:12]})")
        return
    yield StringCommand(
        "cd", QuoteString(f"{directory}/src"), "&&", QuoteString(data.hivesync_npm), "ci", "--no-audit", "--no-fund",
        "&&", "echo", QuoteString(lock_digest), ">", QuoteString(record),
    )


@operation()
def wrangler_deploy(worker: str, directory: str, digest: str):
    """`wrangler deploy --dry-run` (bundles and checks the config, uploads nothing), then
    `wrangler deploy --env <env>`, when the worker's digest differs from the recorded one."""
    data = host.data
    record = f"{directory}/.deployed.sha256"
    if _recorded(record) == digest:
        host.noop(f"worker {worker} is deployed ({digest[:12]})")
        return
    args = ("--config", "wrangler.toml", "--env", data.hivesync_wrangler_deploy_env)
    yield StringCommand(
        "cd", QuoteString(directory), "&&",
        *wrangler_argv(data, "deploy", "--dry-run", "--outdir", ".dry-run", *args), ">&2",
        "|| { echo", QuoteString(f"worker {worker}: wrangler deploy --dry-run failed: nothing deployed"), ">&2; exit 1; };",
        *wrangler_argv(data, "deploy", *args),
        "&&", "echo", QuoteString(digest), ">", QuoteString(record),
    )


@operation()
def wrangler_secret(worker: str, directory: str, secret_name: str, value: HiddenValue):
    """`wrangler secret put NAME --env <env>`, the value on stdin from a 0600 file that is
    removed right after; a digest (not the value) records what was pushed."""
    data = host.data
    digest = secret_digest(worker, secret_name, value.unmask())
    record = f"{directory}/.secrets/{secret_name}.sha256"
    if _recorded(record) == digest:
        host.noop(f"worker {worker}: secret {secret_name} is up to date")
        return
    temp = f"{directory}/.secrets/{secret_name}.value"
    yield StringCommand("mkdir", "-p", QuoteString(f"{directory}/.secrets"), "&&", "chmod", "700",
                        QuoteString(f"{directory}/.secrets"))
    yield StringCommand("rm", "-f", QuoteString(temp), "&&", "install", "-m", "600", "/dev/null", QuoteString(temp))
    yield FileUploadCommand(BytesIO(value.unmask().encode()), temp)
    yield StringCommand(
        "cd", QuoteString(directory), "&&",
        *wrangler_argv(data, "secret", "put", secret_name, "--config", "wrangler.toml",
                       "--env", data.hivesync_wrangler_deploy_env),
        "<", QuoteString(temp), ">/dev/null; rc=$?;", "rm -f", QuoteString(temp), ";",
        '[ "$rc" -eq 0 ] &&', "echo", QuoteString(digest), ">", QuoteString(record),
    )


@operation()
def r2_bucket(bucket: str):
    """The plan's "Create R2 bucket": `wrangler r2 bucket create` only when the account
    does not list it; fails (changing nothing) when wrangler cannot list buckets."""
    data = host.data
    buckets = host.get_fact(R2Buckets, wrangler=data.hivesync_wrangler)
    if buckets is None:
        message = (f"{data.hivesync_wrangler} r2 bucket list failed: log wrangler in "
                   "(`wrangler login` or CLOUDFLARE_API_TOKEN) before deploying the workers")
        yield StringCommand("echo", QuoteString(message), ">&2", "&&", "false")
        return
    if bucket in buckets:
        host.noop(f"R2 bucket {bucket} exists")
        return
    yield StringCommand(*wrangler_argv(data, "r2", "bucket", "create", bucket))


@operation()
def r2_placeholders(bucket: str, prefixes: list[str], record: str):
    """The plan's N.6.3 structure: one empty object per prefix (`previews/`, ...), put once
    per bucket and prefix list (a local record; putting again would only overwrite them)."""
    data = host.data
    digest = hashlib.sha256(("\0".join([bucket, *sorted(prefixes)])).encode()).hexdigest()
    if _recorded(record) == digest:
        host.noop(f"R2 bucket {bucket}: {', '.join(prefixes)} exist")
        return
    empty = f"{record}.empty"
    puts = []
    for prefix in prefixes:
        puts += [*wrangler_argv(data, "r2", "object", "put", f"{bucket}/{prefix}", "--file", empty, "--remote"), "&&"]
    yield StringCommand(": >", QuoteString(empty), "&&", *puts, "echo", QuoteString(digest), ">", QuoteString(record),
                        "; rc=$?; rm -f", QuoteString(empty), "; exit $rc")


def workers_problems(data) -> list[str]:
    """Why the workers cannot be deployed from here now (prepare time, changes nothing)."""
    problems = []
    src = _local(data.hivesync_workers_src)
    enabled = [w for w, spec in data.hivesync_workers.items() if spec.get("enabled", True)]
    if src is None or not src.is_dir():
        problems.append(f"no workers folder {src} (hivesync_workers_src): the HiveSync checkout has no Cloudflare "
                        "workers yet, so there is nothing to deploy from this machine; the server role is unaffected")
    elif missing := [w for w in enabled if not (src / w).is_dir()]:
        problems.append(f"workers {', '.join(missing)} have no folder under {src} (hivesync_workers_src); "
                        "disable them in hivesync_workers or add their source")
    # The plan: SSL must succeed before Worker callbacks are allowed.
    url = f"https://{data.hivesync_domain}{data.hivesync_public_health_path}"
    health = host.get_fact(HttpHealth, url=url, ca_file=data.get("hivesync_workers_ca_file"))
    if not (health and health.get("ok")):
        problems.append(f"the backend does not answer over HTTPS yet ({url}: {describe(health)}); deploy the server "
                        "role first - workers call back only over verified TLS")
    return problems


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
    r2_bucket(name=f"R2 bucket {data.hivesync_r2_bucket}", bucket=data.hivesync_r2_bucket)
    r2_placeholders(name=f"R2 bucket {data.hivesync_r2_bucket}: {', '.join(data.hivesync_r2_prefixes)}",
                    bucket=data.hivesync_r2_bucket, prefixes=list(data.hivesync_r2_prefixes),
                    record=f"{state_dir}/.r2-{data.hivesync_r2_bucket}.placeholders")
    for worker, spec in data.hivesync_workers.items():
        if not spec.get("enabled", True):
            continue
        directory = f"{state_dir}/{worker}"
        toml = render_wrangler_toml(data, worker)
        sources = worker_sources(data, worker)
        files.directory(name=f"{directory}/src", path=f"{directory}/src", mode="700")
        for path, rel in sources:
            files.put(name=f"{worker}: src/{rel}", src=str(path), dest=f"{directory}/src/{rel}", mode="644")
        files.put(name=f"{worker}: wrangler.toml", src=StringIO(toml), dest=f"{directory}/wrangler.toml", mode="644")
        lock = _local(data.hivesync_workers_src) / worker / "package-lock.json"
        if lock.is_file():
            npm_ci(name=f"npm ci {worker} (when package-lock.json changed)", worker=worker, directory=directory,
                   lock_digest=hashlib.sha256(lock.read_bytes()).hexdigest())
        if not worker_routes(spec) and not spec.get("crons"):
            logger.warning(f"worker {worker}: no routes and no cron triggers in hivesync_workers: deployed, "
                           "but nothing reaches it (workers_dev is off)")
        wrangler_deploy(name=f"wrangler deploy {worker} (when changed)", worker=worker, directory=directory,
                        digest=worker_digest(toml, sources))
        for name in data.hivesync_worker_secrets:
            wrangler_secret(name=f"wrangler secret put {name} ({worker})", worker=worker, directory=directory,
                            secret_name=name, value=values[name])


def main(data):
    check_config(data)
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
