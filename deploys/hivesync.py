"""HiveSync (plan 004, "Phase N"): backend on a Linode VM, Workers on Cloudflare.

    pyinfra inventory.py deploys/hivesync.py                  # disposable test hosts
    DEPLOY_ENV=prod pyinfra inventory.py deploys/hivesync.py  # the Linode + this machine

Each host plays one role (`hivesync_role`, from the inventory):

server (the Linode VM): preflight (OS, disk, RAM, the domain's A record, ports 80/443
free or nginx's, secrets) -> ufw (deny incoming; 22, 80, 443) -> Docker -> the env file
(.env.production, 0600; POSTGRES_PASSWORD and JWT_SECRET generated once on the host) ->
backup (pg_dump, verified) when the backend image changes -> the compose stack
(backend, postgres, redis; volumes; ports on 127.0.0.1) -> health gate (compose
healthchecks, /api/health, Alembic at head) that rolls the backend back to the previous
image when it fails (and restores the dump when the failed release had migrated the
database) -> nginx (HTTP -> HTTPS, /api/, WebSocket, /internal/ denied) +
certbot -> HTTPS checked from the machine running pyinfra.

workstation (the operator's machine): refused until https://<domain>/api/health answers
with a valid certificate; then per worker a wrangler.toml ([env.dev], [env.production],
the R2 binding, WORKER_CALLBACK_URL), `wrangler deploy --env production` only when the
worker's source or config changed (a local digest), and its secrets pushed with
`wrangler secret put NAME --env production` on stdin (never in argv, never printed).
The check runs before anything changes, so the very first deploy goes in two steps:
`--limit <the Linode>` first, then a plain run (the workstation then passes).

Where the plan is naive, this does what a careful operator would: the backend's own
`alembic upgrade head` on start is verified from outside (the DB must be at head), an
image change is preceded by a verified dump, and the same WORKER_CALLBACK_SECRET reaches
the backend and the workers (HMAC callbacks are the backend's job).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from io import BytesIO, StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.context import ctx_host, state
from pyinfra.facts.files import File, FileContents
from pyinfra.facts.server import Home
from pyinfra.operations import files

from deploys import secrets
from deploys.errors import ConfigError, PreflightFailed
from deploys.operations import poll, secret_file, wait_until
from deploys.parts.compose import compose_check, compose_stack, detected_cli, env_file_text, fail_command, to_yaml
from deploys.parts.docker_host import docker_host
from deploys.parts.firewall import firewall, normalise_rules
from deploys.parts.preflight import collect_problems
from deploys.parts.health import external_https_check
from deploys.parts.tls import https_site
from deploys.templating import render
from facts.http import HttpHealth, describe
from facts.hivesync import AlembicAtHead, ContainerImage, R2Buckets
from facts.system import MemAvailableMb

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("backend", "postgres", "redis")
CONTAINER = {s: f"hivesync-{s}" for s in SERVICES}
ROLES = ("server", "workstation")
WRANGLER_TEMPLATE = "home/.local/state/hivesync/workers/wrangler.toml.j2"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_WORKER = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")
_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$")


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
    for service in SERVICES:
        if not getattr(data, f"hivesync_{service}_image"):
            problems.append(f"hivesync_{service}_image is not set")
        test = (data.hivesync_healthchecks or {}).get(service)
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
    if data.hivesync_role == "server":
        try:
            normalise_rules(data.get("firewall_allow_tcp") or [])
        except ConfigError as exc:
            problems.append(str(exc))
    for worker in data.hivesync_workers or {}:
        if not _WORKER.match(worker):
            problems.append(f"hivesync_workers: {worker!r} is not a worker name (lowercase, digits, _)")
    if data.hivesync_wrangler_deploy_env not in (data.hivesync_wrangler_envs or []):
        problems.append(f"hivesync_wrangler_deploy_env {data.hivesync_wrangler_deploy_env!r} is not in "
                        f"hivesync_wrangler_envs {data.hivesync_wrangler_envs}")
    return problems


def check_config(data) -> None:
    if problems := config_problems(data):
        raise ConfigError("hivesync: " + "; ".join(problems))


# ----------------------------------------------------------------------------- the stack


def base_url(data) -> str:
    return f"https://{data.hivesync_domain}"


def container_port(data) -> int:
    return int((data.hivesync_backend_env or {}).get("PORT", 4000))


def _healthcheck(data, service: str) -> dict:
    return {"test": list(data.hivesync_healthchecks[service]), **(data.hivesync_healthcheck_timing or {})}


def _healthy(*services: str) -> dict:
    return {s: {"condition": "service_healthy"} for s in services}


def stack(data) -> dict:
    """backend + postgres + redis; every published port on the loopback bind address."""
    bind, env = data.hivesync_bind_address, data.hivesync_backend_env
    backend = {
        "image": _lit(data.hivesync_backend_image),
        "container_name": CONTAINER["backend"],
        "restart": "unless-stopped",
        # .env.production: the plan's variables (data) + secrets; the backend runs
        # `alembic upgrade head` itself before serving (N.7.3).
        "env_file": [data.hivesync_env_file],
        "ports": [f"{bind}:{data.hivesync_backend_port}:{container_port(data)}"],
        "depends_on": _healthy("postgres", "redis"),
        "healthcheck": _healthcheck(data, "backend"),
    }
    if data.hivesync_backend_build:
        backend["build"] = {"context": _lit(data.hivesync_backend_build)}
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
    """The plan's non-secret backend variables (BASE_URL from the domain)."""
    values = {"BASE_URL": base_url(data)}
    values.update({k: "" if v is None else str(v) for k, v in data.hivesync_backend_env.items()})
    return values


def env_spec(data) -> dict:
    """For the host-side env script: generated secrets + the operator's values."""
    d = data.hivesync_secrets_dir
    return {
        "generated": f"{d}/generated.env",
        "user": f"{d}/user.env",
        "target": f"{data.hivesync_dir}/{data.hivesync_env_file}",
        "random": dict(data.hivesync_generated_secrets),
        "jwt": {},
        "jwt_secret": "JWT_SECRET",
        "jwt_expiry_s": 0,
        "header": (
            "Managed by pyinfra (deploys/hivesync.py): the plan's .env.production. Do not edit:\n"
            f"{', '.join(data.hivesync_generated_secrets)} come from {d}/generated.env (made once on\n"
            f"this host), the rest from {d}/user.env (data + the operator's .env).\n"
        ),
    }


@deploy("Environment file (.env.production)")
def environment(data):
    from deploys.archon import stack_env

    values = {"COMPOSE_PROJECT_NAME": data.hivesync_compose_project, **backend_env(data),
              **secrets.get(list(data.required_secrets))}
    spec = env_spec(data)
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


def backup_command(data, stamp: str, running: dict) -> StringCommand:
    """pg_dump (custom format) of the live DB, verified with pg_restore --list, plus what a
    rollback needs in <dir>/.previous-image: the image id + name running now, the DB's
    Alembic revision and the dump (restored when the new release migrated the DB)."""
    env = data.hivesync_backend_env
    base, backups = data.hivesync_dir, data.hivesync_backup_dir
    dump = f"{backups}/hivesync-{stamp}.dump"
    compose = f"{base}/{data.hivesync_compose_file}"
    return StringCommand(
        "set -e;", "umask 077;", "mkdir -p", QuoteString(backups), ";", "chmod 700", QuoteString(backups), ";",
        "docker exec", QuoteString(CONTAINER["postgres"]), "pg_dump -U", QuoteString(env["POSTGRES_USER"]),
        "-d", QuoteString(env["POSTGRES_DB"]), "-Fc >", QuoteString(dump + ".tmp"), ";",
        "tables=$(docker exec -i", QuoteString(CONTAINER["postgres"]), "pg_restore --list <", QuoteString(dump + ".tmp"),
        "| grep -c ' TABLE ' || true);",
        'if [ "$tables" -lt 1 ]; then echo', QuoteString(f"backup {dump} holds no table: refusing to change the image"),
        ">&2; rm -f", QuoteString(dump + ".tmp"), "; exit 1; fi;",
        "mv", QuoteString(dump + ".tmp"), QuoteString(dump), ";",
        "revision=$(", *_psql(data, REVISION_SQL), "2>/dev/null || true);",
        "cp -p", QuoteString(compose), QuoteString(f"{compose}.previous"), ";",
        "echo", QuoteString(f"{running['running_id']} {running['running_name']}"), '"${revision:--}"',
        QuoteString(dump), ">", QuoteString(f"{base}/.previous-image"), ";",
        "echo", QuoteString(f"backup {dump}: "), '"$tables tables, revision ${revision:-none}";',
        "ls -1t", QuoteString(backups), "| grep '^hivesync-.*\\.dump$' | tail -n +" + str(int(data.hivesync_keep_backups) + 1),
        "| sed", QuoteString(f"s#^#{backups}/#"), "| xargs -r rm -f",
    )


@operation()
def backup_before_image_change():
    """A verified pg_dump before the backend's image changes (first deploy: nothing to save)."""
    data = host.data
    current = host.get_fact(ContainerImage, container=CONTAINER["backend"], image=data.hivesync_backend_image)
    if not current["running_id"]:
        host.noop("no backend running yet: nothing to back up")
        return
    if current["wanted_id"] and current["wanted_id"] == current["running_id"]:
        host.noop(f"backend already runs {data.hivesync_backend_image}")
        return
    host.log(f"backend image changes ({current['running_name']} -> {data.hivesync_backend_image}): pg_dump first")
    yield backup_command(data, time.strftime("%Y%m%dT%H%M%S"), current)


def stack_check(data):
    """Ok when compose says healthy, /api/health answers 2xx and the DB is at Alembic's head."""
    services = compose_check(data.hivesync_compose_project, SERVICES)
    url = f"http://{data.hivesync_bind_address}:{data.hivesync_backend_port}{data.hivesync_health_path}"

    def check():
        ok, observed = services()
        if not ok:
            return False, observed
        health = host.get_fact(HttpHealth, url=url)
        if not (health and health.get("ok")):
            return False, f"{url}: {describe(health)}"
        alembic = host.get_fact(AlembicAtHead, container=CONTAINER["backend"],
                                current=list(data.hivesync_alembic_current), heads=list(data.hivesync_alembic_heads))
        if not alembic["at_head"]:
            return False, f"database not at Alembic head (current {alembic['current']}, heads {alembic['heads']})"
        return True, f"{observed}; {url} healthy; database at head {','.join(alembic['heads'])}"

    return check


def rollback_command(data, reason: str) -> StringCommand:
    """Previous compose file + image back; when the failed release migrated the database,
    stop the backend and restore the dump taken before it; `up -d`, wait for health, fail."""
    env = data.hivesync_backend_env
    base = data.hivesync_dir
    compose = f"{base}/{data.hivesync_compose_file}"
    cli = detected_cli() or "docker compose"
    url = f"http://{data.hivesync_bind_address}:{data.hivesync_backend_port}{data.hivesync_health_path}"
    message = f"{reason}. Rolled back the backend to the previous image"
    impossible = QuoteString(f"{reason}. Rollback impossible, host left as the failed release left it: ")
    pg, user, db = QuoteString(CONTAINER["postgres"]), QuoteString(env["POSTGRES_USER"]), QuoteString(env["POSTGRES_DB"])
    return StringCommand(
        "cd", QuoteString(base), "&&", "read -r prev_id prev_name prev_rev dump <", QuoteString(f"{base}/.previous-image"),
        "|| { printf '%s%s\\n'", impossible, "'no record of the previous image'", ">&2; exit 1; };",
        'docker tag "$prev_id" "$prev_name"',
        "|| { printf '%s%s\\n'", impossible, '"previous image $prev_id is gone"', ">&2; exit 1; };",
        "cp -p", QuoteString(f"{compose}.previous"), QuoteString(compose),
        "|| { printf '%s%s\\n'", impossible, "'the previous compose file is gone'", ">&2; exit 1; };",
        "now_rev=$(", *_psql(data, REVISION_SQL), "2>/dev/null || true);", "restored='';",
        'if [ "${now_rev:--}" != "$prev_rev" ]; then',
        "docker stop", QuoteString(CONTAINER["backend"]), ">/dev/null;",
        # Into an empty schema, in one transaction: `pg_restore --clean` would only drop what
        # the dump has, leaving the failed migration's new tables behind.
        # The SQL is extracted to a 0600 file first: a pg_restore that fails half-way must
        # never feed psql a truncated script after the DROP.
        'sql=$(mktemp) && docker exec -i', pg, 'pg_restore -f - < "$dump" > "$sql"',
        "&& { echo 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;'; cat \"$sql\"; }",
        "| docker exec -i", pg, "psql -q -v ON_ERROR_STOP=1 --single-transaction -U", user, "-d", db, ">/dev/null;",
        'rc=$?; rm -f "$sql";', 'if [ "$rc" -eq 0 ]; then',
        'restored=" and restored the database from $dump (the release had migrated it from ${prev_rev} to ${now_rev})";',
        'else restored=" BUT restoring $dump FAILED: the database stays at ${now_rev}";',
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
def gate_or_rollback(upgraded, timeout_s: float, interval_s: float):
    """Health gate; when it fails after this run changed the backend image, roll back."""
    data = host.data
    description = f"compose project {data.hivesync_compose_project}"
    if not state.is_executing:
        host.noop(f"{description}: checked when the deploy runs")
        return
    ok, observed = poll(stack_check(data), timeout_s, interval_s)
    if ok:
        host.noop(f"{description}: {observed}")
        return
    reason = f"{description}: not healthy after {timeout_s:g}s; last observed: {observed}"
    if upgraded() and host.get_fact(File, path=f"{data.hivesync_dir}/.previous-image"):
        yield rollback_command(data, reason)
        return
    yield fail_command(reason)


# ----------------------------------------------------------------------------- nginx / TLS


def vhosts(data) -> list[dict]:
    backend = f"{data.hivesync_bind_address}:{data.hivesync_backend_port}"
    locations = [{"path": p, "deny": True} for p in data.hivesync_denied_paths]
    locations.append({"path": "/api/", "upstream": backend, "websocket": True})
    locations += [{"path": p, "upstream": backend, "websocket": True} for p in data.hivesync_websocket_paths]
    return [{"server_name": data.hivesync_domain, "upstream": backend, "websocket": True,
             "max_body": data.hivesync_max_body, "locations": locations}]


def external_check(data):
    url = f"https://{data.hivesync_domain}{data.hivesync_health_path}"
    wait_until(
        name=f"{url} healthy through nginx (from here)",
        check=external_https_check(data.hivesync_health_path, data.hivesync_domain,
                                   data.hivesync_external_address, data.hivesync_external_ca_file),
        description=url, timeout_s=data.health_timeout_s, interval_s=data.health_interval_s,
    )


# ----------------------------------------------------------------------------- server role


def memory_problem(available_mb: int | None, minimum_mb: int) -> str | None:
    if available_mb is not None and available_mb < minimum_mb:
        return f"only {available_mb} MiB memory available; the plan sizes the Linode at >= {minimum_mb} MiB"
    return None


def server_preflight(data) -> None:
    """Every problem in one message, before the first change."""
    ports = {80: "nginx.service", 443: "nginx.service", data.hivesync_backend_port: "docker.service"}
    for port in (data.hivesync_postgres_port, data.hivesync_redis_port):
        if port:
            ports[port] = "docker.service"
    problems = collect_problems(names=[data.hivesync_domain], ports=ports, secrets=data.required_secrets)
    if memory := memory_problem(host.get_fact(MemAvailableMb), int(data.hivesync_min_memory_mb)):
        if data.hivesync_memory_policy == "fail":
            problems.append(memory)
        else:
            host.log(f"warning: {memory}")
    if problems:
        raise PreflightFailed(f"preflight failed on {host.name}: " + "; ".join(problems))


def server(data):
    server_preflight(data)
    firewall(data.firewall_allow_tcp)
    docker_host()
    _, env = environment(data)
    backup = backup_before_image_change(name="Database backup before a backend image change")
    compose_stack(
        name=f"Compose stack {data.hivesync_compose_project} (backend, postgres, redis)",
        project=data.hivesync_compose_project,
        directory=data.hivesync_dir,
        compose=render_compose(data),
        compose_file=data.hivesync_compose_file,
        env_file=data.hivesync_env_file,
        services=SERVICES,
        # a new image under the same tag changes no file: the backup op (which runs exactly
        # when the wanted image differs from the running one) makes compose recreate it
        recreate_when=(env, backup),
    )
    gate_or_rollback(
        name="Backend healthy and database at Alembic head (else roll back)",
        upgraded=backup.did_change, timeout_s=data.hivesync_health_timeout_s, interval_s=data.health_interval_s,
    )
    https_site(data.hivesync_nginx_site, vhosts(data), [data.hivesync_domain], data)
    if data.hivesync_external_check:
        external_check(data)


# ----------------------------------------------------------------------------- workstation role


def script_name(worker: str) -> str:
    """Cloudflare script names: lowercase letters, digits and dashes."""
    return "hivesync-" + worker.replace("_", "-")


def worker_envs(data) -> list[dict]:
    """[env.dev] talks to a local backend; [env.production] to https://<domain>."""
    urls = {"production": base_url(data), "dev": data.get("hivesync_dev_base_url") or "http://127.0.0.1:4000"}
    return [
        {
            "name": env,
            "bucket": data.hivesync_r2_bucket,
            "vars": {
                "R2_BUCKET": data.hivesync_r2_bucket,
                "R2_PREFIXES": ",".join(data.hivesync_r2_prefixes),
                "WORKER_CALLBACK_URL": urls.get(env, base_url(data)) + data.hivesync_callback_path,
                "AI_MODEL": str(data.hivesync_backend_env.get("AI_MODEL", "")),
            },
        }
        for env in data.hivesync_wrangler_envs
    ]


def render_wrangler_toml(data, worker: str) -> str:
    spec = data.hivesync_workers[worker]
    envs = [{**e, "script_name": f"{script_name(worker)}-{e['name']}"} for e in worker_envs(data)]
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
def wrangler_deploy(worker: str, directory: str, digest: str):
    """`wrangler deploy --env <env>` when the worker's digest differs from the recorded one."""
    data = host.data
    record = f"{directory}/.deployed.sha256"
    if _recorded(record) == digest:
        host.noop(f"worker {worker} is deployed ({digest[:12]})")
        return
    yield StringCommand(
        "cd", QuoteString(directory), "&&",
        *wrangler_argv(data, "deploy", "--config", "wrangler.toml", "--env", data.hivesync_wrangler_deploy_env),
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


def workers_preflight(data) -> None:
    """The plan: SSL must succeed before Worker callbacks are allowed."""
    url = f"https://{data.hivesync_domain}{data.hivesync_health_path}"
    health = host.get_fact(HttpHealth, url=url, ca_file=data.get("hivesync_workers_ca_file"))
    if not (health and health.get("ok")):
        raise PreflightFailed(
            f"preflight failed on {host.name}: the backend does not answer over HTTPS yet ({url}: "
            f"{describe(health)}); deploy the server role first - workers call back only over verified TLS"
        )


def workers(data):
    workers_preflight(data)
    values = secrets.get(list(data.hivesync_worker_secrets))
    state_dir = str(data.hivesync_workers_state_dir)
    home = host.get_fact(Home) or "~"
    state_dir = state_dir.replace("~", home, 1) if state_dir.startswith("~") else state_dir
    files.directory(name=state_dir, path=state_dir, mode="700")
    r2_bucket(name=f"R2 bucket {data.hivesync_r2_bucket}", bucket=data.hivesync_r2_bucket)
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
        wrangler_deploy(name=f"wrangler deploy {worker} (when changed)", worker=worker, directory=directory,
                        digest=worker_digest(toml, sources))
        for name in data.hivesync_worker_secrets:
            wrangler_secret(name=f"wrangler secret put {name} ({worker})", worker=worker, directory=directory,
                            secret_name=name, value=values[name])


def main(data):
    check_config(data)
    if data.hivesync_role == "workstation":
        workers(data)
    else:
        server(data)


# (`ctx_host.isset()`: unit tests import this module's helpers outside a pyinfra run.)
if ctx_host.isset() and "hivesync" in host.groups:
    main(host.data)
