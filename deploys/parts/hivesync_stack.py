"""HiveSync's stack definition: what the Linode, local Docker (N.2.2) and local
development (N.2.1) run, from one set of data (group_data/hivesync.py).

The backend (built from the operator's checkout, tagged by content: deploys/parts/
source_image.py, or a ready image), postgres and redis; every port published on the
loopback bind address; one port knob drives the command, the container port, the
healthcheck and PORT; the env file is the app's own settings (backend/app/config.py at
upstream c5680a2) with secrets generated once on the host; the checks a gate polls
(compose health, the backend's health path, Alembic at head when the app has an
alembic.ini, else the plan's N.7.2 tables). A separate part so that the three roles cannot
drift apart: local Docker's compose file is byte-for-byte the server's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyinfra import host
from pyinfra.api import HiddenValue, QuoteString, deploy
from pyinfra.operations import files

from deploys.env_schema import env_text
from deploys.errors import ConfigError
from deploys.operations import secret_file
from deploys.parts.compose import compose_check, env_file_text, to_yaml
from deploys.parts.generated_env import env_spec, stack_env, user_secrets
from deploys.parts.source_image import Source, content_tag, read_source, source_image
from deploys.templating import render
from facts.hivesync import AlembicAtHead, DatabaseSchema, missing_tables
from facts.http import HttpHealth, describe

logger = logging.getLogger("pyinfra")
REPO = Path(__file__).resolve().parent.parent.parent


SERVICES = ("backend", "postgres", "redis")


CONTAINER = {s: f"hivesync-{s}" for s in SERVICES}


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


def backend_image_step(data, directory: str, unit: str | None, where: str = "on the host") -> None:
    """The backend image built from the checkout (nothing when a ready image is set or the
    content tag is already built): a transient unit on the Linode, the foreground
    (`unit=None`) on the operator's machine."""
    if source := backend_source(data):
        source_image(
            name=f"Backend image built {where} from {source.describe()}",
            source=source, tag=backend_image(data), repository=data.hivesync_backend_repository,
            directory=directory, dockerfile=data.hivesync_backend_dockerfile,
            build_args=dict(data.hivesync_backend_build_args or {}), keep=data.hivesync_backend_keep_images,
            unit=unit, timeout_s=data.hivesync_build_timeout_s,
        )


def deployed_record(data, meta: dict | None = None) -> str:
    """<dir>/DEPLOYED: what serves now (written after the final gate; make hivesync-status);
    `meta`: a kept release's record (a rollback: the image is pinned, the source is not
    what was built)."""
    source = backend_source(data)
    lines = [f"image {backend_image(data)}"]
    if meta and meta.get("source"):
        lines += [f"commit {meta.get('commit') or '-'}{'+dirty' if meta.get('dirty') else ''}",
                  f"ref {meta.get('ref') or '-'}", f"source {meta['source']}"]
    elif source is None:
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


DEV_SERVICES = ("postgres", "redis")


def dev_compose(data) -> str:
    """postgres + redis exactly as the server's stack has them (volumes, healthchecks,
    loopback ports): the backend runs from the checkout instead."""
    document = stack(data)
    document["services"] = {k: v for k, v in document["services"].items() if k in DEV_SERVICES}
    header = ("Managed by pyinfra (deploys/hivesync.py, role local_dev): postgres + redis of the server's stack\n"
              f"for the backend running from {data.hivesync_dev_checkout}. Local edits are overwritten.")
    return to_yaml(document, header=header)


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


def env_files(data, where: str, owner: dict | None = None, user_env: str = "user.env", values: dict | None = None):
    """The env file the stack reads (every role): <secrets>/`user_env` (0600: data + the
    secrets from .env, or `values`) and the target, its generated secrets made once
    `where`. `owner`: the operator's user/group (local roles); None: root's, <dir> made too."""
    spec = hivesync_env_spec(data)
    spec["user"] = f"{data.hivesync_secrets_dir}/{user_env}"
    as_root = {"user": "root", "group": "root"} if owner is None else {}
    files.directory(name=data.hivesync_secrets_dir, path=data.hivesync_secrets_dir, mode="700", **as_root)
    if owner is None:
        files.directory(name=data.hivesync_dir, path=data.hivesync_dir, mode="755", **as_root)
    user = secret_file(name=f"{spec['user']} (data + secrets from .env)", dest=spec["user"],
                       content=HiddenValue(env_file_text(values if values is not None else backend_values(data))),
                       **(owner or {}))
    env = stack_env(name=f"{spec['target']} (generated once {where} + {spec['user']})", spec=spec)
    return user, env


@deploy("Environment file (.env.production)")
def environment(data):
    return env_files(data, "on the host")


# ----------------------------------------------------------------------------- checks a gate polls


def _psql(data, sql: str) -> list:
    env = data.hivesync_backend_env
    return ["docker exec", QuoteString(CONTAINER["postgres"]), "psql -XAtq -U", QuoteString(env["POSTGRES_USER"]),
            "-d", QuoteString(env["POSTGRES_DB"]), "-c", QuoteString(sql)]


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
        return ok, warned(f"{observed}; {url} healthy; {database}") if ok else database

    return check


def dev_check(data):
    """The backend's health path answers 2xx and the database passes `schema_check`."""
    url = backend_url(data)

    def check():
        health = host.get_fact(HttpHealth, url=url)
        if not (health and health.get("ok")):
            return False, f"{url}: {describe(health)}"
        ok, database = schema_check(data)
        return ok, warned(f"{url} healthy; {database}") if ok else database

    return check


def warned(observed: str) -> str:
    """A passing check's text; its "warning: ..." part (tables the plan wants and the app
    lacks) also goes to pyinfra's output as a warning (a gate's noop text shows only with -v).
    A poll stops at the first pass, so this logs once per gate."""
    if "warning: " in observed:
        host.log(observed[observed.index("warning: "):], log_func=logger.warning)
    return observed
