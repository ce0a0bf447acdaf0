"""Every HiveSync knob checked before anything connects, with one message naming every
problem: the roles, names, ports, the knobs that must agree with the real backend
(upstream c5680a2: its CMD's port, /health, no Alembic), the N.3 environment schema
(deploys/env_schema.py) and the workers' routes and crons.
"""

from __future__ import annotations

import ipaddress
import re

from deploys.env_schema import BACKEND, ELSEWHERE, WORKERS, env_problems, production, url_problem
from deploys.errors import ConfigError
from deploys.parts.firewall import normalise_rules
from deploys.parts.hivesync_stack import SERVICES
from deploys.parts.hivesync_workers import worker_envs, worker_routes

ROLES = ("server", "workstation", "local_docker", "local_dev")
LOCAL_ACTIONS = ("deploy", "start", "stop", "status")


_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


_WORKER = re.compile(r"^[a-z][a-z0-9_]*$")


_ENV_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")


_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$")


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
