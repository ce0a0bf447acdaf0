"""Archon: Supabase + Archon as ONE compose stack on a Docker host (the consolidation plan).

    pyinfra inventory.py deploys/archon.py                  # disposable test hosts
    DEPLOY_ENV=prod pyinfra inventory.py deploys/archon.py  # archon.nexorithm.io

Phases: preflight (OS, disk, memory, ports, DNS, secrets, SUPABASE_URL as archon-server
accepts it, subnet overlap; an old layout the deploy cannot migrate stops the run here) ->
Docker host (engine, daemon.json, compose v2 or v1) -> layout (/opt/archon, Kong config,
Supabase init additions, Archon's migration/, scripts) -> env file (secrets settled ON the
host once: the operator's, carried over from the old .env, or generated) -> migration from
the old layout (only where one is found: backups, stop, load, start, verify; automatic
rollback) -> the compose stack (idempotent `up -d`) -> Archon's schema (once, on a new
database) -> health gates -> nginx + TLS -> external check -> cleanup of the old layout ->
the plan's health check on a timer. `make archon-restore BACKUP=<dir>` puts a backup back.

Checked against the real images: coleam00/Archon archive/v1-task-management-rag (ecaece4),
supabase/postgres (the image's supabase_admin, init scripts, pg_hba, pgsodium key dir) and
Supabase's self-hosting compose and kong.yml (supabase/supabase docker/).

The plan's development habits are fixed for production: no `--reload`, no source-code
bind mounts, no docker.sock (unless `archon_server_docker_socket`), every published port
on 127.0.0.1, healthchecks + `depends_on` conditions, images instead of builds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
import time
from io import BytesIO, StringIO
from pathlib import Path
from urllib.parse import urlparse

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.context import ctx_host, state
from pyinfra.facts.files import Link, Sha256File
from pyinfra.operations import files

from deploys.errors import ConfigError, PreflightFailed
from deploys.parts import compose_releases, deploy_lock, releases
from deploys.parts.compose import (
    compose_check,
    compose_stack,
    detected_cli,
    env_file_text,
    fail_command,
    to_yaml,
)
from deploys.parts.docker_host import docker_host
from deploys.parts.generated_env import ENV_SCRIPT, stack_env, user_secrets  # noqa: F401 (ENV_SCRIPT: tests)
from deploys.parts.health import health_check_timer, http_check, http_gate
from deploys.parts.host_steps import UnitState, host_step, settled, unfinished, wait_for_step
from deploys.parts.local_machine import Overlay
from deploys.parts.release_records import LIB_DIR, release_records_installed
from deploys.parts.preflight import preflight
from deploys.parts.tls import https_site
from deploys.templating import render, render_io
from facts.archon import (
    ArchonOldLayout,
    ArchonSchema,
    DockerNetworkSubnets,
    migration_action,
    overlapping_networks,
)

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("postgres", "kong", "rest", "studio", "meta", "archon-server", "archon-mcp", "archon-ui", "archon-agents")
CONTAINER = {s: (s if s.startswith("archon-") else f"archon-{s}") for s in SERVICES}
# container ports (the plan's; the host side is data: archon_ports)
CONTAINER_PORT = {"kong": 8000, "postgres": 5432, "studio": 3000, "archon-server": 8181,
                  "archon-mcp": 8051, "archon-ui": 3737, "archon-agents": 8052}
GENERATED_RANDOM = {"POSTGRES_PASSWORD": 24, "JWT_SECRET": 32, "ARCHON_BOOTSTRAP_SECRET": 32, "DASHBOARD_PASSWORD": 16}
GENERATED_JWT = {"SUPABASE_ANON_KEY": "anon", "SUPABASE_SERVICE_KEY": "service_role"}
HEALTH_UNIT = "archon-health-check"
MIGRATE_SCRIPT = "bin/archon-migrate"
MIGRATE_UNIT = "archon-migrate"  # the migration's transient systemd unit (deploys/parts/host_steps.py)
# $1 marker, $2 action, then the command: a "migrate" the marker says is done is not rerun
_SKIP_WHEN_MIGRATED = (
    'if [ "$2" = migrate ] && [ -e "$1" ]; then echo "migrated by an earlier run (backups in $(cat "$1"))"; exit 0; fi;'
    ' shift 2; exec "$@"'
)
DB_INIT_DIR = "db"  # in archon_dir: init scripts added to the Supabase image's
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]*$")
_TIMING_KEYS = {"interval", "timeout", "retries", "start_period"}


def _lit(value) -> str:
    """A literal value in the compose file: `$` must not start an interpolation."""
    return str(value).replace("$", "$$")


# ----------------------------------------------------------------------------- config


def check_config(data) -> None:
    """Every knob the stack needs, checked before anything connects; one message for all."""
    problems = []
    try:
        bind = ipaddress.ip_address(str(data.archon_bind_address))
        if not bind.is_loopback:
            problems.append(f"archon_bind_address {data.archon_bind_address} is not a loopback address")
    except ValueError:
        problems.append(f"archon_bind_address {data.archon_bind_address!r} is not an IP address")
    ports = data.archon_ports or {}
    for service in CONTAINER_PORT:
        port = ports.get(service)
        if not isinstance(port, int) or not 0 < port < 65536:
            problems.append(f"archon_ports[{service!r}] = {port!r} is not a TCP port")
    used = [p for s, p in ports.items() if s != "archon-agents" or data.archon_agents_enabled]
    if len(used) != len(set(used)):
        problems.append(f"archon_ports has duplicates: {sorted(used)}")
    for service in SERVICES:
        if not (data.archon_images or {}).get(service):
            problems.append(f"archon_images[{service!r}] is not set")
        test = (data.archon_healthchecks or {}).get(service)
        if not (isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL")):
            problems.append(f"archon_healthchecks[{service!r}] must be a list starting with CMD or CMD-SHELL")
    try:
        ipaddress.ip_network(str(data.archon_network_subnet))
    except ValueError:
        problems.append(f"archon_network_subnet {data.archon_network_subnet!r} is not a network (e.g. 172.20.0.0/16)")
    for knob in ("archon_compose_project", "archon_network", "archon_postgres_volume", "archon_postgres_config_volume",
                 "archon_old_compose_project"):
        if not _NAME.match(str(getattr(data, knob) or "")):
            problems.append(f"{knob} {getattr(data, knob)!r} is not a valid docker name")
    if data.archon_compose_project == data.archon_old_compose_project:
        problems.append("archon_compose_project must differ from archon_old_compose_project (the old "
                        "containers stay untouched until the migration is verified)")
    for schema in data.archon_verify_schemas or []:
        if not _SCHEMA.match(str(schema)):
            problems.append(f"archon_verify_schemas: {schema!r} is not a schema name")
    timing = data.archon_healthcheck_timing or {}
    if set(timing) - _TIMING_KEYS:
        problems.append(f"archon_healthcheck_timing: unknown keys {sorted(set(timing) - _TIMING_KEYS)}")
    for service, override in (data.archon_healthcheck_timing_by_service or {}).items():
        if service not in SERVICES or not isinstance(override, dict) or set(override) - _TIMING_KEYS:
            problems.append(f"archon_healthcheck_timing_by_service[{service!r}]: a service and {sorted(_TIMING_KEYS)} only")
    unknown = set(data.archon_service_env or {}) - set(SERVICES)
    if unknown:
        problems.append(f"archon_service_env: unknown services {sorted(unknown)}")
    for name in (data.archon_public_name, data.archon_studio_name):
        if not name or not re.match(r"^[A-Za-z0-9.-]+$", str(name)):
            problems.append(f"public name {name!r} is not a DNS name")
    if not re.match(r"^[A-Za-z0-9_.-]+$", str(data.archon_dashboard_username or "")):
        problems.append(f"archon_dashboard_username {data.archon_dashboard_username!r}: letters, digits, _ . - only")
    problems += supabase_url_problems(data)
    if problems:
        raise ConfigError("archon: " + "; ".join(problems))


def archon_accepts_supabase_url(url: str) -> str | None:
    """None when archon-server starts with SUPABASE_URL=`url`, else its reason. Upstream's
    rule (coleam00/Archon ecaece4, python/src/server/config/config.py validate_supabase_url):
    https, or plain http only to localhost, 127.0.0.1, host.docker.internal, *.localhost or
    a private/loopback/link-local IP."""
    parsed = urlparse(str(url))
    if parsed.scheme not in ("http", "https"):
        return "it must use http or https"
    if parsed.scheme == "https":
        return None if parsed.netloc else "it has no host"
    hostname = parsed.hostname or ""
    if hostname in ("localhost", "127.0.0.1", "host.docker.internal") or hostname.endswith(".localhost"):
        return None
    try:
        ip = ipaddress.ip_address(hostname)
    except ValueError:
        ip = None
    if ip is not None and (ip.is_private or ip.is_loopback or ip.is_link_local) and not ip.is_unspecified:
        return None
    return f"archon-server accepts plain http only to localhost, host.docker.internal, *.localhost or a private IP, not {hostname!r}"


def kong_address(data) -> tuple[str, str]:
    """("alias", name) or ("ip", address): how Kong gets the name in archon_supabase_url."""
    hostname = urlparse(str(data.archon_supabase_url)).hostname or ""
    try:
        ipaddress.ip_address(hostname)
        return "ip", hostname
    except ValueError:
        return "alias", hostname


def supabase_url_problems(data) -> list[str]:
    url = str(data.archon_supabase_url or "")
    why = archon_accepts_supabase_url(url)
    if why:
        return [f"archon_supabase_url {url!r}: {why} (use e.g. http://kong.localhost:8000)"]
    parsed = urlparse(url)
    if parsed.scheme != "http" or (parsed.port or 80) != CONTAINER_PORT["kong"]:
        return [f"archon_supabase_url {url!r} must be http://<name or IP>:{CONTAINER_PORT['kong']} (Kong on the stack network)"]
    kind, value = kong_address(data)
    if kind == "ip":
        try:
            inside = ipaddress.ip_address(value) in ipaddress.ip_network(str(data.archon_network_subnet))
        except ValueError:
            inside = False
        if not inside:
            return [f"archon_supabase_url {url!r}: {value} is not in archon_network_subnet {data.archon_network_subnet}"]
    elif not value.endswith(".localhost"):
        return [f"archon_supabase_url {url!r}: a name for Kong must end in .localhost"]
    return []


def services_enabled(data) -> list[str]:
    return [s for s in SERVICES if s != "archon-agents" or data.archon_agents_enabled]


def profiles(data) -> list[str]:
    return ["agents"] if data.archon_agents_enabled else []


# ----------------------------------------------------------------------------- the stack


def _healthcheck(data, service: str, interval: str, timeout: str, retries: int, start_period: str | None = None):
    check = {"test": list(data.archon_healthchecks[service]), "interval": interval, "timeout": timeout,
             "retries": retries}
    if start_period:
        check["start_period"] = start_period
    check.update(data.archon_healthcheck_timing or {})
    check.update((data.archon_healthcheck_timing_by_service or {}).get(service, {}))
    return check


def _ports(data, service: str) -> list[str]:
    return [f"{data.archon_bind_address}:{data.archon_ports[service]}:{CONTAINER_PORT[service]}"]


def _healthy(*services: str) -> dict:
    return {s: {"condition": "service_healthy"} for s in services}


def allowed_hosts(data) -> str:
    names = [data.archon_public_name, data.archon_studio_name, *(data.archon_allowed_hosts or [])]
    return ",".join(dict.fromkeys(names))


def stack(data) -> dict:
    """The consolidated compose document: 9 services (agents behind a profile), one network."""
    admin, db = _lit(data.archon_postgres_admin_user), _lit(data.archon_postgres_db)
    net = [data.archon_network]
    kind, kong_name = kong_address(data)
    kong_net = {data.archon_network: ({"aliases": [kong_name]} if kind == "alias" else {"ipv4_address": kong_name})}
    sp, ap, mp = CONTAINER_PORT["archon-server"], CONTAINER_PORT["archon-agents"], CONTAINER_PORT["archon-mcp"]
    common_archon = {
        "SUPABASE_URL": _lit(data.archon_supabase_url),
        "SUPABASE_SERVICE_KEY": "${SUPABASE_SERVICE_KEY}",
        "LOGFIRE_TOKEN": "${LOGFIRE_TOKEN:-}",
        "LOG_LEVEL": _lit(data.archon_log_level),
        "SERVICE_DISCOVERY_MODE": "docker_compose",
        "ARCHON_SERVER_PORT": str(sp),
        "ARCHON_MCP_PORT": str(mp),
        "ARCHON_AGENTS_PORT": str(ap),
        "AGENTS_ENABLED": "true" if data.archon_agents_enabled else "false",
    }
    services = {
        "postgres": {
            # Supabase's compose (docker/docker-compose.yml, db): no POSTGRES_USER (the image's
            # supabase_admin), its init extended by two scripts, the key dir on a volume
            "environment": {
                "POSTGRES_HOST": "/var/run/postgresql",
                "PGPORT": "5432",
                "POSTGRES_PORT": "5432",
                "PGPASSWORD": "${POSTGRES_PASSWORD}",
                "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}",
                "PGDATABASE": db,
                "POSTGRES_DB": db,
                "JWT_SECRET": "${JWT_SECRET}",
                "JWT_EXP": str(int(data.archon_jwt_exp)),
            },
            "volumes": [
                "postgres-data:/var/lib/postgresql/data",
                "postgres-config:/etc/postgresql-custom",
                f"./{DB_INIT_DIR}/roles.sql:/docker-entrypoint-initdb.d/init-scripts/99-roles.sql:ro",
                f"./{DB_INIT_DIR}/jwt.sql:/docker-entrypoint-initdb.d/init-scripts/99-jwt.sql:ro",
            ],
            "command": [_lit(a) for a in data.archon_postgres_command],
            "healthcheck": _healthcheck(data, "postgres", "10s", "5s", 5, "10s"),
        },
        "kong": {
            "environment": {
                "KONG_DATABASE": "off",
                "KONG_DECLARATIVE_CONFIG": "/home/kong/kong.yml",
                "KONG_DNS_ORDER": "LAST,A,CNAME",
                "KONG_PLUGINS": "request-transformer,cors,key-auth,acl,basic-auth",
                "KONG_NGINX_PROXY_PROXY_BUFFER_SIZE": "160k",  # (Supabase's values: Studio's large headers)
                "KONG_NGINX_PROXY_PROXY_BUFFERS": "64 160k",
                "SUPABASE_ANON_KEY": "${SUPABASE_ANON_KEY}",
                "SUPABASE_SERVICE_KEY": "${SUPABASE_SERVICE_KEY}",
                # Studio behind Kong's basic-auth (Supabase's own setup)
                "DASHBOARD_USERNAME": _lit(data.archon_dashboard_username),
                "DASHBOARD_PASSWORD": "${DASHBOARD_PASSWORD}",
            },
            "volumes": ["./kong/kong.yml:/home/kong/temp.yml:ro"],
            # a new kong.yml changes this label, so compose recreates kong to read it
            "labels": {"archon.kong-config-sha256": hashlib.sha256(render_kong(data).encode()).hexdigest()[:16]},
            # the keys come from the environment into Kong's config at start (Supabase's way)
            "entrypoint": ["bash", "-c",
                           'eval "echo \\"$$(cat /home/kong/temp.yml)\\"" > /home/kong/kong.yml'
                           " && /docker-entrypoint.sh kong docker-start"],
            "depends_on": _healthy("postgres", "rest"),
            "healthcheck": _healthcheck(data, "kong", "10s", "10s", 5),
        },
        "rest": {
            "environment": {
                "PGRST_DB_URI": f"postgres://authenticator:${{POSTGRES_PASSWORD}}@postgres:5432/{db}",
                "PGRST_DB_SCHEMAS": "public,storage,graphql_public",
                "PGRST_DB_ANON_ROLE": "anon",
                "PGRST_JWT_SECRET": "${JWT_SECRET}",
                "PGRST_DB_USE_LEGACY_GUCS": "false",
                "PGRST_APP_SETTINGS_JWT_SECRET": "${JWT_SECRET}",
                "PGRST_APP_SETTINGS_JWT_EXP": str(int(data.archon_jwt_exp)),
                "PGRST_ADMIN_SERVER_PORT": "3001",  # /ready for the healthcheck
            },
            "depends_on": _healthy("postgres"),
            "healthcheck": _healthcheck(data, "rest", "10s", "5s", 5),
        },
        "studio": {
            "environment": {
                # Next.js binds to $HOSTNAME, which Docker sets to the container id: the
                # healthcheck's localhost would not answer (Supabase's compose sets "::")
                "HOSTNAME": "::",
                "SUPABASE_URL": "http://kong:8000",
                "AUTH_JWT_SECRET": "${JWT_SECRET}",
                "SUPABASE_PUBLIC_URL": f"https://{_lit(data.archon_studio_name)}",
                "STUDIO_PG_META_URL": "http://meta:8080",
                "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}",
                "SUPABASE_ANON_KEY": "${SUPABASE_ANON_KEY}",
                "SUPABASE_SERVICE_KEY": "${SUPABASE_SERVICE_KEY}",
                "LOGFLARE_API_KEY": "${LOGFLARE_API_KEY:-}",
            },
            "depends_on": _healthy("kong", "meta"),
            "healthcheck": _healthcheck(data, "studio", "10s", "10s", 5, "20s"),
        },
        "meta": {
            "environment": {
                "PG_META_PORT": "8080",
                "PG_META_DB_HOST": "postgres",
                "PG_META_DB_PORT": "5432",
                "PG_META_DB_NAME": db,
                "PG_META_DB_USER": admin,
                "PG_META_DB_PASSWORD": "${POSTGRES_PASSWORD}",
            },
            "depends_on": _healthy("postgres"),
            "healthcheck": _healthcheck(data, "meta", "10s", "5s", 5),
        },
        "archon-server": {
            "environment": {
                **common_archon,
                "SUPABASE_JWT_SECRET": "${JWT_SECRET}",
                "OPENAI_API_KEY": "${OPENAI_API_KEY:-}",
                "ARCHON_BOOTSTRAP_SECRET": "${ARCHON_BOOTSTRAP_SECRET}",
            },
            "extra_hosts": ["host.docker.internal:host-gateway"],
            # upstream's migration tracking reads the SQL files here (migration_service.py)
            "volumes": [f"{_lit(data.archon_migration_dir)}:/app/migration:ro"],
            "depends_on": _healthy("postgres", "kong"),
            "healthcheck": _healthcheck(data, "archon-server", "30s", "10s", 3, "40s"),
        },
        "archon-mcp": {
            "environment": {
                **common_archon,
                "TRANSPORT": "sse",
                "API_SERVICE_URL": f"http://archon-server:{sp}",
                "AGENTS_SERVICE_URL": f"http://archon-agents:{ap}",
            },
            "extra_hosts": ["host.docker.internal:host-gateway"],
            "depends_on": _healthy("archon-server"),
            "healthcheck": _healthcheck(data, "archon-mcp", "30s", "10s", 3, "60s"),
        },
        "archon-ui": {
            "environment": {
                # the UI calls the API with relative URLs, through nginx
                "VITE_ARCHON_SERVER_PORT": str(sp),
                "ARCHON_SERVER_PORT": str(sp),
                "HOST": _lit(data.archon_public_name),
                "PROD": "true",
                "VITE_ALLOWED_HOSTS": _lit(allowed_hosts(data)),
                "VITE_SHOW_DEVTOOLS": "false",
                "DOCKER_ENV": "true",
            },
            "depends_on": _healthy("archon-server"),
            "healthcheck": _healthcheck(data, "archon-ui", "30s", "10s", 3),
        },
        "archon-agents": {
            "profiles": ["agents"],
            "environment": {**common_archon, "OPENAI_API_KEY": "${OPENAI_API_KEY:-}"},
            "depends_on": _healthy("archon-server"),
            "healthcheck": _healthcheck(data, "archon-agents", "30s", "10s", 3, "40s"),
        },
    }
    if data.archon_server_docker_socket:
        services["archon-server"]["volumes"].append("/var/run/docker.sock:/var/run/docker.sock:ro")
    document = {}
    for service in SERVICES:
        spec = services[service]
        env = spec.pop("environment")
        env.update({k: _lit(v) for k, v in (data.archon_service_env or {}).get(service, {}).items()})
        entry = {
            "image": _lit(data.archon_images[service]),
            "container_name": CONTAINER[service],
            "restart": "unless-stopped",
        }
        if service in CONTAINER_PORT:
            entry["ports"] = _ports(data, service)
        entry["environment"] = env
        entry["networks"] = kong_net if service == "kong" else net
        entry.update(spec)
        document[service] = entry
    return {
        "services": document,
        "networks": {data.archon_network: {"name": data.archon_network, "driver": "bridge",
                                           "ipam": {"config": [{"subnet": str(data.archon_network_subnet)}]}}},
        "volumes": {"postgres-data": {"name": data.archon_postgres_volume},
                    "postgres-config": {"name": data.archon_postgres_config_volume}},
    }


def render_compose(data) -> str:
    header = (
        "Managed by pyinfra (deploys/archon.py, data: group_data/archon.py): local edits are overwritten.\n"
        "Consolidated Archon stack: one network, every published port on "
        f"{data.archon_bind_address}. Secrets come from {data.archon_env_file} (0600).\n"
        f"Here: docker compose ps | logs -f | restart <service> (docker-compose with compose v1)."
    )
    return to_yaml(stack(data), header=header)


def render_kong(data) -> str:
    return render("opt/archon/kong.yml.j2")


# ----------------------------------------------------------------------------- secrets / env


def env_spec(data) -> dict:
    d = data.archon_secrets_dir
    return {
        "generated": f"{d}/generated.env",
        "user": f"{d}/user.env",
        "target": f"{data.archon_dir}/{data.archon_env_file}",
        "random": GENERATED_RANDOM,
        "jwt": GENERATED_JWT,
        "jwt_secret": "JWT_SECRET",
        "jwt_expiry_s": int(data.archon_jwt_lifetime_days) * 86400,
        "header": (
            "Managed by pyinfra (deploys/archon.py): the plan's .env.production. Do not edit:\n"
            f"generated secrets come from {d}/generated.env (made once on this host), the rest from\n"
            f"{d}/user.env (the operator's .env).\n"
        ),
    }


# ----------------------------------------------------------------------------- migration


def _q(value) -> str:
    return shlex.quote(str(value))


def _qs(values) -> str:
    return " ".join(_q(v) for v in values)


def count_sql(schemas) -> str:
    names = ", ".join(f"'{s}'" for s in schemas)
    return (
        "SELECT format('%I.%I', table_schema, table_name) || ' ' || "
        "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
        "table_schema, table_name), false, true, '')))[1]::text "
        "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
        f"AND table_schema IN ({names}) ORDER BY 1"
    )


def extensions_sql(schemas) -> str:
    """The old database's extensions in the migrated schemas (or Supabase's `extensions`),
    as statements for the new one: a schema dump does not carry them."""
    names = ", ".join(f"'{s}'" for s in [*schemas, "extensions"])
    return (
        "SELECT format('CREATE EXTENSION IF NOT EXISTS %I WITH SCHEMA %I;', e.extname, n.nspname) "
        "FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        f"WHERE e.extname <> 'plpgsql' AND n.nspname IN ({names}) ORDER BY e.oid"
    )


def render_migrate_script(data) -> str:
    script = f"{data.archon_dir}/{MIGRATE_SCRIPT}"
    return render(
        "opt/archon/bin/archon-migrate.j2",
        script=script,
        dir=_q(data.archon_dir),
        project=_q(data.archon_compose_project),
        compose_file=_q(data.archon_compose_file),
        env_file=_q(data.archon_env_file),
        new_db=_q(CONTAINER["postgres"]),
        new_volume=_q(data.archon_postgres_volume),
        new_network=_q(data.archon_network),
        new_containers=_qs(CONTAINER[s] for s in services_enabled(data)),
        profile_args=_qs(a for p in profiles(data) for a in ("--profile", p)),
        old_db=_q(data.archon_old_db_container),
        old_db_volume=_q(data.archon_old_db_volume),
        old_prefix=_q(data.archon_old_container_prefix),
        old_volume_prefix=_q(data.archon_old_volume_prefix),
        old_networks=_qs(data.archon_old_networks),
        old_project=_q(data.archon_old_compose_project),
        old_entry_files=_qs(f for f in (data.archon_old_compose_file, data.archon_old_env_file) if f),
        old_config=_qs(data.archon_old_config),
        rebind_unit=_q(data.archon_old_rebind_unit or ""),
        db_admin=_q(data.archon_postgres_admin_user),
        new_config_volume=_q(data.archon_postgres_config_volume),
        old_config_volume=_q(data.archon_old_config_volume or ""),
        schema_args=_qs(a for schema in data.archon_verify_schemas for a in ("-n", schema)),
        extensions_sql=_q(extensions_sql(data.archon_verify_schemas)),
        db_name=_q(data.archon_postgres_db),
        api_health_url=_q(data.archon_api_health_url),
        health_timeout=int(data.archon_health_timeout_s),
        backup_dir=_q(data.archon_backup_dir),
        count_sql=_q(count_sql(data.archon_verify_schemas)),
        lib_dir=_q(LIB_DIR),
    )


def layout_args(data) -> dict:
    """Arguments of the ArchonOldLayout fact."""
    return {
        "container_prefix": data.archon_old_container_prefix,
        "networks": list(data.archon_old_networks),
        "volume_prefix": data.archon_old_volume_prefix,
        "unit_path": f"/etc/systemd/system/{data.archon_old_rebind_unit}",
        "marker": f"{data.archon_dir}/.migrated",
    }


@operation()
def migrate_old_layout(data_dir: str, compose_file: str, compose: str, script: str, layout_args: dict,
                       db_container: str, db_volume: str, phase: str = "migrate", timeout_s: int = 7200):
    """phase "migrate": the plan's phases 1-6, only on a host that still has the old layout
    (read when the operation runs); phase "cleanup": phase 7, once the host was migrated
    (the deploy asks for it after nginx, TLS and the external checks). Nothing left: no change."""
    layout = host.get_fact(ArchonOldLayout, **layout_args)
    action, why = migration_action(layout, db_container, db_volume)
    if action == "none":
        host.noop("no old layout left")
        return
    if action == "blocked":
        yield fail_command(why)
        return
    if phase == "migrate" and action == "cleanup":
        host.noop(f"migrated already; the old layout is removed later in this run ({why})")
        return
    if phase == "cleanup" and action == "migrate":
        if state.is_executing:
            yield fail_command(f"the old layout was not migrated: {why}")
            return
        action = "cleanup"  # (planning: the migration runs first in this run)
    cli = detected_cli()
    if cli is None:
        if state.is_executing:
            yield fail_command(f"no compose CLI on {host.name}")
            return
        cli = "docker compose"
    host.log(f"{action}: {why}")
    compose_path = f"{data_dir}/{compose_file}"
    if action == "migrate" and host.get_fact(Sha256File, path=compose_path) != hashlib.sha256(compose.encode()).hexdigest():
        yield FileUploadCommand(BytesIO(compose.encode()), compose_path)
        yield StringCommand("chmod", "644", QuoteString(compose_path))
    # a transient unit: a dropped SSH session or a killed pyinfra cannot cut the migration
    # short (it finishes, or its trap rolls back); the next apply waits for an unfinished
    # one. A migrate phase that finds the marker (an earlier, cut-off run finished) stops
    # there: the old layout goes only after this run's nginx/TLS checks.
    argv = ["sh", "-c", _SKIP_WHEN_MIGRATED, "archon-migrate", f"{data_dir}/.migrated", action,
            "env", "HOME=/root", f"COMPOSE={cli}", script, action]
    yield host_step(MIGRATE_UNIT, argv, f"Archon migration ({action}, deploys/archon.py)", timeout_s=timeout_s)


@operation()
def archon_schema(data_dir: str, compose_file: str, compose: str, env_file: str, project: str, container: str,
                  admin_user: str, db: str, sql_path: str, restart: list[str], timeout_s: int):
    """Archon's migration/complete_setup.sql, once, on a database without Archon's tables
    (a fresh install; a migrated database has them), BEFORE the Archon services start:
    archon-server's /health answers 503 ("migration_required") until its tables exist, so
    its healthcheck and everything that depends on it would never pass. On a new host this
    starts postgres alone first (Supabase's init: roles, auth.role()), then runs the file in
    one transaction that stops at the first error, as postgres (the owner of the
    developer's tables on Supabase, as in its SQL editor); it records upstream's
    migrations in archon_migrations. Archon services already running are restarted."""
    status = host.get_fact(ArchonSchema, container=container, admin_user=admin_user, db=db)
    if status == "present":
        host.noop("Archon's schema is in the database")
        return
    cli = detected_cli()
    if cli is None:
        if state.is_executing:
            yield fail_command(f"no compose CLI on {host.name}")
            return
        cli = "docker compose"
    host.log(f"{sql_path}: once, on a database without Archon's tables")
    compose_path = f"{data_dir}/{compose_file}"
    if host.get_fact(Sha256File, path=compose_path) != hashlib.sha256(compose.encode()).hexdigest():
        yield FileUploadCommand(BytesIO(compose.encode()), compose_path)
        yield StringCommand("chmod", "644", QuoteString(compose_path))
    script = render(
        "opt/archon/bin/archon-schema.sh.j2",
        dir=_q(data_dir), cli=cli, project=_q(project), compose_file=_q(compose_file), env_file=_q(env_file),
        container=_q(container), admin=_q(admin_user), db=_q(db), sql=_q(sql_path), restart=_qs(restart),
        timeout=int(timeout_s),
    )
    yield StringCommand("bash", "-c", QuoteString(script))


@operation()
def shortcut_link(path: str, target: str):
    """`path` -> `target` (relative), unless a real file is there (e.g. the old layout's,
    which the migration moves away first)."""
    link = host.get_fact(Link, path=path)
    if link and link.get("link_target") == target:
        host.noop(f"{path} -> {target}")
        return
    if link is False:
        if state.is_executing:
            yield fail_command(f"{path} exists and is not a link to {target}: move it away (it belongs to no known layout)")
            return
    yield StringCommand("ln", "-sfn", QuoteString(target), QuoteString(path))


# ----------------------------------------------------------------------------- phases


def checked_preflight(data) -> None:
    """Refuse (nothing changed) a host whose old layout cannot be migrated."""
    layout = host.get_fact(ArchonOldLayout, **layout_args(data))
    action, why = migration_action(layout, data.archon_old_db_container, data.archon_old_db_volume)
    if unfinished(host.get_fact(UnitState, unit=MIGRATE_UNIT)):
        # a cut-off apply's migration still runs: this run waits for it (a dockerd restart
        # and the migration step both do) and goes on from what it left
        logger.warning(f"{host.name}: the migration of an earlier apply still runs ({MIGRATE_UNIT}.service): "
                       "this run waits for it")
    elif action == "blocked":
        raise PreflightFailed(f"preflight failed on {host.name}: {why}")
    # the old networks are still there during the migration: the new one must not overlap them
    clash = overlapping_networks(host.get_fact(DockerNetworkSubnets), str(data.archon_network_subnet), data.archon_network)
    if clash:
        raise PreflightFailed(f"preflight failed on {host.name}: archon_network_subnet {data.archon_network_subnet} "
                              f"overlaps Docker network(s) {', '.join(clash)}: pick another subnet")
    ports = {port: "docker.service" for service, port in data.archon_ports.items()
             if service != "archon-agents" or data.archon_agents_enabled}
    if data.archon_proxy:
        ports.update({80: "nginx.service", 443: "nginx.service"})
    preflight(
        names=public_names(data) if data.archon_proxy else [],
        ports=ports,
        secrets=data.required_secrets,
        disk_paths=("/",),
    )


@deploy("Layout: directories, Kong config, scripts")
def layout(data):
    base = data.archon_dir
    files.directory(name=base, path=base, user="root", group="root", mode="755")
    files.directory(name=f"{base}/bin", path=f"{base}/bin", user="root", group="root", mode="755")
    files.directory(name=f"{base}/kong", path=f"{base}/kong", user="root", group="root", mode="755")
    files.directory(name=data.archon_secrets_dir, path=data.archon_secrets_dir, user="root", group="root", mode="700")
    files.directory(name=f"{base}/{DB_INIT_DIR}", path=f"{base}/{DB_INIT_DIR}", user="root", group="root", mode="755")
    for script in ("roles.sql", "jwt.sql"):
        # read by the image's init as the postgres user: world-readable, no secret in it
        files.put(name=f"{base}/{DB_INIT_DIR}/{script}", src=StringIO(render(f"opt/archon/{DB_INIT_DIR}/{script}")),
                  dest=f"{base}/{DB_INIT_DIR}/{script}", user="root", group="root", mode="644")
    if data.archon_migration_source:
        files.sync(name=f"{data.archon_migration_dir} (Archon's schema, from {data.archon_migration_source})",
                   src=str(data.archon_migration_source), dest=data.archon_migration_dir,
                   user="root", group="root", mode="644", dir_mode="755", delete=True)
    files.put(name=f"{base}/kong/kong.yml", src=StringIO(render_kong(data)), dest=f"{base}/kong/kong.yml",
                     user="root", group="root", mode="644")
    files.put(name=f"{base}/{MIGRATE_SCRIPT}", src=StringIO(render_migrate_script(data)),
              dest=f"{base}/{MIGRATE_SCRIPT}", user="root", group="root", mode="750")


def carry_spec(data) -> dict:
    """What the env script takes over from the old layout's .env (read on the host)."""
    return {
        "path": f"{data.archon_dir}/{data.archon_old_env_file}" if data.archon_old_env_file else "",
        "names": ["JWT_SECRET", *GENERATED_JWT],
        "known_jwt_secrets": list(data.archon_known_jwt_secrets or []),
    }


@deploy("Environment file (secrets generated on the host)")
def environment(data):
    from deploys.operations import secret_file

    spec = {**env_spec(data), "carry": carry_spec(data)}
    values = {"COMPOSE_PROJECT_NAME": data.archon_compose_project, **user_secrets(data, data.archon_optional_secrets)}
    user = secret_file(
        name=f"{spec['user']} (secrets from .env)",
        dest=spec["user"],
        content=HiddenValue(env_file_text(values)),
    )
    env = stack_env(name=f"{spec['target']} (generated once on the host + {spec['user']})", spec=spec)
    return user, env


def public_names(data) -> list[str]:
    """The names nginx serves (and certbot proves): Studio's only when it is opened."""
    return [data.archon_public_name] + ([data.archon_studio_name] if data.archon_studio_public else [])


def vhosts(data) -> list[dict]:
    """UI host: / -> UI, /api/ -> server, /socket.io/ -> server (WebSocket). Studio's host
    only when archon_studio_public, and then to Kong, whose catch-all route asks for
    DASHBOARD_USERNAME/DASHBOARD_PASSWORD (basic-auth) before it proxies to Studio."""
    bind, ports = data.archon_bind_address, data.archon_ports
    server = f"{bind}:{ports['archon-server']}"
    studio = [{"server_name": data.archon_studio_name, "upstream": f"{bind}:{ports['kong']}", "websocket": True}]
    return [
        {
            "server_name": data.archon_public_name,
            "upstream": f"{bind}:{ports['archon-ui']}",
            "websocket": True,
            "max_body": data.archon_max_body,
            "locations": [
                {"path": "/api/", "upstream": server, "websocket": False},
                {"path": "/socket.io/", "upstream": server, "websocket": True},
            ],
        },
    ] + (studio if data.archon_studio_public else [])


def health_files(data) -> dict[str, StringIO]:
    base = data.archon_dir
    script = f"{base}/bin/{HEALTH_UNIT}"
    bind, ports = data.archon_bind_address, data.archon_ports
    local = [data.archon_api_health_url, f"http://{bind}:{ports['archon-ui']}/", f"http://{bind}:{ports['studio']}/"]
    external = [f"https://{data.archon_public_name}/"]
    context = {
        "unit": HEALTH_UNIT, "script": script, "dir": _q(base), "every": data.archon_health_check_every,
        "containers": [CONTAINER[s] for s in services_enabled(data)],
        "local_urls": [_q(u) for u in local],
        "external_urls": [_q(u) for u in external] if data.archon_health_check_external and data.archon_proxy else [],
        "curl_ca": f"--cacert {_q(data.archon_health_ca_file)} " if data.archon_health_ca_file else "",
        "api_key_file": _q(data.archon_health_api_key_file),
        "auth_url": _q(f"https://{data.archon_public_name}{data.archon_auth_check_path}"),
        "api_auth": bool(data.archon_api_auth),
        # Studio's host must refuse a request without credentials (Kong basic-auth)
        "studio_url": _q(f"https://{data.archon_studio_name}/") if data.archon_studio_public and data.archon_proxy
        and data.archon_health_check_external else "",
    }
    return {
        script: render_io(f"opt/archon/bin/{HEALTH_UNIT}.j2", **context),
        f"/etc/systemd/system/{HEALTH_UNIT}.service": render_io(f"etc/systemd/system/{HEALTH_UNIT}.service.j2", **context),
        f"/etc/systemd/system/{HEALTH_UNIT}.timer": render_io(f"etc/systemd/system/{HEALTH_UNIT}.timer.j2", **context),
    }


def monitoring(data):
    """The plan's health-check.sh as a script on a systemd timer (output in the journal)."""
    health_check_timer(HEALTH_UNIT, health_files(data), script_mode="750")


def stack_check(data, services: list[str]):
    """Every service running and healthy by compose, then Archon's API health URL 2xx: one
    poll (one command, facts/prefetch.py) reads both."""
    project, url = data.archon_compose_project, data.archon_api_health_url
    checks = (compose_check(project, services), http_check(url))

    def check():
        for one in checks:  # in order: the API is judged once compose says all are healthy
            ok, observed = one()
            if not ok:
                return False, observed
        return True, f"{len(services)} services running and healthy; {url} healthy"

    return check


def rollback_args(data, services: list[str], upgraded, restored, backup: str | None) -> dict:
    """What a way back after an image change needs (a failed gate, a failed `up -d`): the
    stack's files, its containers, and the database backed up before this run when it
    restored another (a rollback)."""
    return dict(data_dir=data.archon_dir, compose_file=data.archon_compose_file, env_file=data.archon_env_file,
                project=data.archon_compose_project, containers=[CONTAINER[s] for s in services],
                timeout_s=data.archon_health_timeout_s, upgraded=upgraded, restored=restored,
                restore=restore_command(data, backup) if backup else None, profiles=profiles(data))


def stack_gate(data, services: list[str], way_back: dict) -> None:
    """The stack healthy; else, after an image change, the previous images back (and the
    database backed up before this run, when it restored another: a rollback): `way_back`
    from rollback_args."""
    project, url = data.archon_compose_project, data.archon_api_health_url
    compose_releases.gate_or_rollback(
        name=f"compose project {project}: {len(services)} services running and healthy; {url} healthy (else roll back)",
        check=stack_check(data, services), description=f"compose project {project} and {url}",
        interval_s=data.get("health_interval_s") or 2, **way_back)


# ----------------------------------------------------------------------------- releases
# A release is the set of images the stack runs (their ids on the host, per service), in
# the releases layout under archon_dir (component "images"): `make releases DEPLOY=archon`
# lists them, `make rollback DEPLOY=archon [TO=id]` puts one back with its database (the
# backup taken when it was left). Before the images change: a backup in archon-migrate's
# format (`make archon-restore` reads it too), named in the history line; after the gates:
# the release recorded (compose_releases.record_images_script).

COMPONENT = "images"  # archon_dir/images -> releases/images/<id>


def release_series(data) -> list[releases.Series]:
    return [releases.Series("Archon images", data.archon_dir, (COMPONENT,))]


def release_meta(data) -> dict:
    """Who deployed, from which infra commit (which names the images: `commit` in the listing)."""
    infra, dirty = deploy_lock.git_revision()
    return {"by": deploy_lock.operator(), "commit": infra, "dirty": dirty}


def release_backup_path(data, stamp: str) -> str:
    return f"{data.archon_backup_dir}/archon-release-{stamp}"


def stack_images(data, images: dict | None = None) -> dict:
    """The StackImages fact of the enabled services (`images`: the wanted ones, data's by default)."""
    services = services_enabled(data)
    images = images or data.archon_images
    return host.get_fact(compose_releases.StackImages, project=data.archon_compose_project,
                         containers={s: CONTAINER[s] for s in services}, images={s: images[s] for s in services})


def backup_command(data, path: str) -> str:
    """archon-migrate backup: the database in the format `restore` (make archon-restore)
    reads; the newest archon_keep_releases + 1 release backups stay."""
    return f"{_q(data.archon_dir + '/' + MIGRATE_SCRIPT)} backup {_q(path)} {int(data.archon_keep_releases) + 1}"


def restore_command(data, path: str) -> str:
    """archon-migrate restore: the current database backed up, `path` loaded, the stack started."""
    return f"COMPOSE={_q(detected_cli() or 'docker compose')} {_q(data.archon_dir + '/' + MIGRATE_SCRIPT)} restore {_q(path)}"


PIN_HINT = "(the images in archon_images). Pin archon_images to stay on the rolled-back one."


def rollback(data, series: releases.Series, target: dict) -> None:
    """`make rollback DEPLOY=archon [TO=id]`: the kept release's images (names retagged on
    their recorded ids), then the deploy with those images pinned: a backup of the current
    database, the target's database back, gates (a failing target rolls back to what
    served), a `rollback` history line."""
    rid = target["components"][COMPONENT]
    st = releases.read(series.root, list(series.names))
    meta = st["components"][COMPONENT]["releases"][rid]["meta"]
    images, ids = dict(meta.get("images") or {}), dict(meta.get("image_ids") or {})
    backup = compose_releases.backup_when_left(st.get("history") or [], target["id"])
    host.log(f"rolling Archon back to release {target['id']} (deployed {target.get('at')}, infra commit "
             f"{(meta.get('commit') or '-')[:12]}; its database: {backup or 'none recorded'})")
    # refused before anything changes (a backup of the current database first would push
    # another release's backup out)
    live = compose_releases.running_rid(stack_images(data, {**data.archon_images, **images}), services_enabled(data))
    if live != rid and (refusal := compose_releases.rollback_refusal(  # the id `make releases` lists
            target["id"], backup, compose_releases.backup_present(backup))):
        raise ConfigError(refusal)
    compose_releases.images_retagged(name=f"the images of release {target['id']}", images=images, image_ids=ids)
    kept = {k: v for k, v in meta.items() if k in ("by", "commit", "dirty")}
    pinned = Overlay(data, archon_images={**data.archon_images, **images})
    main(pinned, release=("rollback", {**kept, "by": deploy_lock.operator()}, rid, backup))


def release_actions(data) -> bool:
    """`make releases` / `make rollback` (release_action). False: a normal run."""
    action = data.get("release_action")
    if action in (None, ""):
        return False
    if action not in releases.RELEASE_ACTIONS:
        raise ConfigError(f"release_action {action!r} is not one of {', '.join(releases.RELEASE_ACTIONS)}")
    try:
        return releases.release_action(action, release_series(data), data.get("release_to"),
                                       lambda series, target: rollback(data, series, target))
    except ConfigError as exc:
        raise ConfigError(f"archon {exc}") from None


def main(data, release: tuple | None = None):
    """`release`: (action, meta, target id, its database backup) of a rollback (`rollback`
    runs the deploy with the target's images pinned); None: a deploy or a release action."""
    check_config(data)
    if release is None and release_actions(data):
        return
    action, meta, target, target_backup = release or ("deploy", release_meta(data), None, None)
    # a migration an earlier apply left running stops and starts the stacks whose ports the
    # preflight checks: wait for it now, before anything is read (a port caught mid-stop was
    # reported as taken)
    settled(MIGRATE_UNIT)
    checked_preflight(data)
    # a migration an earlier apply left running re-reads the compose and env files: let it end
    # before anything below rewrites them or reads the layout it is changing
    wait_for_step(name=f"{MIGRATE_UNIT}.service: wait for an unfinished migration", unit=MIGRATE_UNIT)
    docker_host(hold_restart_for=(MIGRATE_UNIT,))  # before any backup; never restarts dockerd mid-migration
    layout(data)
    release_records_installed()  # release_recorded runs it
    _, env = environment(data)
    compose = render_compose(data)
    base = data.archon_dir
    # the migration and, after nginx/TLS, its cleanup: one host-side script, two phases
    old_layout = dict(
        data_dir=base, compose_file=data.archon_compose_file, compose=compose,
        script=f"{base}/{MIGRATE_SCRIPT}", layout_args=layout_args(data),
        db_container=data.archon_old_db_container, db_volume=data.archon_old_db_volume,
    )
    migrate_old_layout(name="Migrate the old layout (only where one is found)", **old_layout)
    archon_schema(
        name="Archon's schema (once, on a new database, before the Archon services start)",
        data_dir=base,
        compose_file=data.archon_compose_file,
        compose=compose,
        env_file=data.archon_env_file,
        project=data.archon_compose_project,
        container=CONTAINER["postgres"],
        admin_user=data.archon_postgres_admin_user,
        db=data.archon_postgres_db,
        sql_path=f"{data.archon_migration_dir}/{data.archon_schema_file}",
        restart=[CONTAINER[s] for s in services_enabled(data) if s.startswith("archon-") and s != "archon-ui"],
        timeout_s=data.archon_health_timeout_s,
    )
    services = services_enabled(data)
    where = dict(project=data.archon_compose_project, containers={s: CONTAINER[s] for s in services},
                 images={s: data.archon_images[s] for s in services})
    st = stack_images(data)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    backed_up = bool(compose_releases.replaces_running(st, services))  # as backup_before_release decides
    backup_path = release_backup_path(data, stamp)
    backup = compose_releases.backup_before_release(
        name="Database backup before the images change (a new release)", data_dir=base,
        compose_file=data.archon_compose_file, backup=backup_command(data, backup_path), needs="postgres", **where)
    restored = None
    if target:
        restored = compose_releases.data_restored(
            name=f"The database of release {target} (archon-migrate restore)", data_dir=base,
            compose_file=data.archon_compose_file, compose=compose, target=target, backup=target_backup,
            restore=restore_command(data, target_backup or ""), **where)
    way_back = rollback_args(data, services, upgraded=backup.did_change,
                             restored=restored.did_change if restored else None,
                             backup=backup_path if backed_up else None)
    compose_stack(
        name=f"Compose stack {data.archon_compose_project} ({len(services)} services)",
        project=data.archon_compose_project,
        directory=base,
        compose=compose,
        compose_file=data.archon_compose_file,
        env_file=data.archon_env_file,
        services=services,
        profiles=profiles(data),
        # a new image under the same name changes no file: the backup (which runs exactly
        # when a wanted image is not the running one) makes compose recreate
        recreate_when=(env, backup),
        # `up -d` waits for archon-server healthy (mcp and ui depend on it): a new server
        # image that never gets there fails it here, so the way back starts here too
        if_up_fails=compose_releases.rollback_if_up_fails(**way_back),
    )
    stack_gate(data, services, way_back)
    if data.archon_proxy:
        https_site(data.archon_nginx_site, vhosts(data), public_names(data), data)
        if data.archon_health_check_external:
            http_gate(f"https://{data.archon_public_name}/", timeout_s=60, ca_file=data.archon_health_ca_file)
    migrate_old_layout(
        name="Remove the old layout (after a verified migration, nginx and TLS)", **old_layout,
        phase="cleanup",
    )
    # (the old layout's own docker-compose.yml and .env are moved away by its cleanup)
    shortcut_link(name=f"{base}/docker-compose.yml -> {data.archon_compose_file}",
                  path=f"{base}/docker-compose.yml", target=data.archon_compose_file)
    shortcut_link(name=f"{base}/.env -> {data.archon_env_file}", path=f"{base}/.env", target=data.archon_env_file)
    compose_releases.release_recorded(
        name="Release history: the images that passed the gates", root=base, component=COMPONENT, meta=meta,
        action=action, backup=backup_path if backed_up else None, keep=int(data.archon_keep_releases),
        pin_hint=PIN_HINT, **where)
    monitoring(data)


# (`ctx_host.isset()`: unit tests import this module's helpers outside a pyinfra run.)
if ctx_host.isset() and "archon" in host.groups:
    deploy_lock.guarded("archon", main, host.data)  # one run at a time on this host, and its record
