"""ha-ingestor (Epic 22/23): InfluxDB + seven services built from source, on a Docker host.

    pyinfra inventory.py deploys/ingestor.py                   # disposable test hosts
    DEPLOY_ENV=prod pyinfra inventory.py deploys/ingestor.py   # ha-ingestor.local
    make ingestor-status                                       # the plan's success criteria

Phases: preflight (config, secrets, Docker >= ingestor_docker_min_version once installed,
free disk, Home Assistant accepts the token, ports free or Docker's; nothing changes on
failure) -> Docker host -> layout, source checkout synced to <dir>/src, env files (0600,
from data + secrets) -> the release, only when something differs (compose file, env, an
image not built from the current source, a service down, the database behind Alembic's
head): bin/ingestor-release takes verified backups (influx backup with its manifest,
SQLite copies passing `PRAGMA integrity_check`), tags the running images `:rollback`,
builds only the services whose source changed, starts influxdb (healthy, bucket present),
then data-api (`alembic upgrade head` only when not at head; tables and WAL verified),
then the rest group by group, each health-gated on its /health JSON. A failure after the
backup re-tags the previous images, restores SQLite from that backup, starts the stack
again health-gated, and fails the run naming the service -> health gates, every published
port on 127.0.0.1 -> discovery (POST /api/discover) only while the devices table is empty.

Fixed from the plan: no `docker-compose down` first (downtime, and nothing to roll back
to) - containers are replaced only after the backup; no `docker image prune -f` (it is
global: it would delete other projects' images) - only our own `:rollback` tags are
replaced; never `rm metadata.db` to "fix" a migration (it destroys the devices and
entities) - a failed migration rolls back to the backup instead; no `Start-Sleep` -
bounded polls; every port on 127.0.0.1 (the plan published them on all interfaces);
memory limits as the plan's expectations say; InfluxDB is not restored on rollback
(a release does not change it; its verified backup is kept for a manual restore).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import subprocess
from fnmatch import fnmatch
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.context import ctx_host
from pyinfra.facts.files import File, Sha256File
from pyinfra.operations import files

from deploys import secrets
from deploys.errors import ConfigError, PreflightFailed
from deploys.operations import secret_file, wait_until
from deploys.parts.compose import _changed, detected_cli, env_file_text, stage_and_validate, to_yaml
from deploys.parts.docker_host import docker_host
from deploys.parts.preflight import collect_problems
from deploys.templating import TEMPLATES
from facts.compose import ComposeServices
from facts.http import HttpHealth
from facts.ingestor import (
    DockerServerVersion,
    HomeAssistantApi,
    ImageSources,
    SqliteState,
    home_assistant_problem,
    version_tuple,
)
from facts.sockets import ListeningSockets, is_loopback_only

REPO = Path(__file__).resolve().parent.parent
RELEASE_SCRIPT = (TEMPLATES / "opt/ha-ingestor/bin/ingestor-release").read_text()
SOURCE_LABEL = "ingestor.source"
PENDING = ".release-pending"  # bin/ingestor-release removes it after a successful release
ENV_FILES = ("influxdb", "websocket", "services")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_MEMORY = re.compile(r"^\d+[kmg]$")
_REVISION = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*['\"]?([^'\"\s]*)['\"]?\s*$", re.M)


# ----------------------------------------------------------------------------- config


def check_config(data) -> None:
    """Every knob checked before anything connects; all problems in one message."""
    problems = []
    try:
        if not ipaddress.ip_address(str(data.ingestor_bind_address)).is_loopback:
            problems.append(f"ingestor_bind_address {data.ingestor_bind_address} is not a loopback address")
    except ValueError:
        problems.append(f"ingestor_bind_address {data.ingestor_bind_address!r} is not an IP address")
    services = data.ingestor_services or {}
    ports = []
    for name, spec in services.items():
        if not _NAME.match(name):
            problems.append(f"service name {name!r} is not a valid compose name")
        if not spec.get("image"):
            problems.append(f"ingestor_services[{name!r}].image is not set")
        for key in ("port", "container_port"):
            port = spec.get(key)
            if (port is not None or key == "container_port") and not (isinstance(port, int) and 0 < port < 65536):
                problems.append(f"ingestor_services[{name!r}].{key} = {port!r} is not a TCP port")
        if spec.get("port") is not None:
            ports.append(spec["port"])
        if spec.get("memory") and not _MEMORY.match(str(spec["memory"])):
            problems.append(f"ingestor_services[{name!r}].memory {spec['memory']!r} must look like 128m")
        if spec.get("env_file") not in ENV_FILES:
            problems.append(f"ingestor_services[{name!r}].env_file must be one of {ENV_FILES}")
        if spec.get("health_path") and spec.get("port") is None:
            problems.append(f"ingestor_services[{name!r}] has a health_path but publishes no port")
        for volume in spec.get("volumes") or {}:
            if volume not in (data.ingestor_volumes or []):
                problems.append(f"ingestor_services[{name!r}] mounts {volume!r}, not in ingestor_volumes")
    if len(ports) != len(set(ports)):
        problems.append(f"published ports are not unique: {sorted(ports)}")
    ordered = [s for group in data.ingestor_start_order or [] for s in group]
    if sorted(ordered) != sorted(services) or len(ordered) != len(set(ordered)):
        problems.append(f"ingestor_start_order must name every service once: {ordered} vs {sorted(services)}")
    for service, db in (data.ingestor_sqlite or {}).items():
        if service not in services or db.get("volume") not in (services.get(service) or {}).get("volumes", {}):
            problems.append(f"ingestor_sqlite[{service!r}]: no such service or it does not mount {db.get('volume')!r}")
    if data.ingestor_migrate_service not in (data.ingestor_sqlite or {}):
        problems.append(f"ingestor_migrate_service {data.ingestor_migrate_service!r} has no ingestor_sqlite entry")
    if "influxdb" not in services:
        problems.append("ingestor_services has no 'influxdb'")
    if not _NAME.match(str(data.ingestor_compose_project or "")):
        problems.append(f"ingestor_compose_project {data.ingestor_compose_project!r} is not a valid compose name")
    if problems:
        raise ConfigError("ingestor: " + "; ".join(problems))


def source_dir(data) -> Path:
    """The user's checkout (relative paths: relative to this repository)."""
    path = Path(str(data.ingestor_source)).expanduser()
    return path if path.is_absolute() else REPO / path


def source_files(root: Path, exclude=(), exclude_dirs=()) -> list[Path]:
    """The files `files.sync` uploads (same exclude semantics: `exclude` matches the full
    local path, `exclude_dirs` the directory path relative to `root`)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames
                             if not any(fnmatch((rel / d).as_posix(), pat) for pat in exclude_dirs))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not any(fnmatch(str(Path(dirpath) / f), pat) for pat in exclude)]
    return found


def tree_digest(root: Path, paths: list[str], files: list[Path]) -> str:
    """SHA-256 over the synced files under `paths` (names, exec bit, content): the image label."""
    digest = hashlib.sha256()
    for path in files:
        rel = path.relative_to(root).as_posix()
        if any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths):
            digest.update(rel.encode() + b"\0" + (b"x" if path.stat().st_mode & 0o100 else b"-"))
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def source_digests(data) -> dict[str, str]:
    root = source_dir(data)
    synced = source_files(root, data.ingestor_source_exclude or [], data.ingestor_source_exclude_dirs or [])
    return {name: tree_digest(root, spec.get("source") or [], synced)
            for name, spec in data.ingestor_services.items() if spec.get("build")}


def source_revision(root: Path) -> dict | None:
    """The checkout's git commit and whether it has local changes (the plan's "export the
    git state"), recorded in every backup; None when it is not a git checkout."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(git("status", "--porcelain").stdout.strip())}


def alembic_head(versions_dir: Path) -> str | None:
    """The one revision no other revision names as its down_revision."""
    revisions, parents = set(), set()
    for path in sorted(Path(versions_dir).glob("*.py")):
        found = dict((k, v) for k, v in _REVISION.findall(path.read_text()))
        if found.get("revision"):
            revisions.add(found["revision"])
            if found.get("down_revision") not in (None, "", "None"):
                parents.add(found["down_revision"])
    heads = sorted(revisions - parents)
    if len(heads) > 1:
        raise ConfigError(f"Alembic in {versions_dir} has several heads {heads}: merge them first")
    return heads[0] if heads else None


# ----------------------------------------------------------------------------- the stack


def volume_name(data, volume: str) -> str:
    return f"{data.ingestor_compose_project}_{volume}"


def container_name(data, service: str) -> str:
    """The plan's names (`docker cp ha-ingestor-data-api:...`)."""
    return f"{data.ingestor_compose_project}-{service}"


def _lit(value) -> str:
    return str(value).replace("$", "$$")


def service_entry(data, name: str, spec: dict, digest: str | None) -> dict:
    entry: dict = {"image": _lit(spec["image"])}
    if spec.get("build"):
        entry["build"] = {
            "context": f"src/{spec['build'].get('context', '.')}".rstrip("/."),
            "dockerfile": spec["build"]["dockerfile"],
            "labels": {SOURCE_LABEL: digest},
        }
        if data.ingestor_build_args:
            entry["build"]["args"] = {k: _lit(v) for k, v in data.ingestor_build_args.items()}
    entry["container_name"] = container_name(data, name)
    entry["restart"] = "unless-stopped"
    entry["env_file"] = [f"env/{spec['env_file']}.env"]
    env = {k: _lit(v) for k, v in (data.ingestor_service_env or {}).get(name, {}).items()}
    if env:
        entry["environment"] = env
    if spec.get("port") is not None:
        entry["ports"] = [f"{data.ingestor_bind_address}:{spec['port']}:{spec['container_port']}"]
    if spec.get("volumes"):
        entry["volumes"] = [f"{v}:{mount}" for v, mount in spec["volumes"].items()]
    if spec.get("memory"):
        entry["mem_limit"] = spec["memory"]
    if spec.get("healthcheck"):
        entry["healthcheck"] = {"test": [_lit(a) for a in spec["healthcheck"]], **(data.ingestor_healthcheck_timing or {})}
    return entry


def stack(data, digests: dict[str, str]) -> dict:
    services = {name: service_entry(data, name, spec, digests.get(name))
                for group in data.ingestor_start_order for name in group
                for spec in [data.ingestor_services[name]]}
    return {"services": services, "volumes": {v: {} for v in data.ingestor_volumes}}


def render_compose(data, digests: dict[str, str]) -> str:
    header = (
        "Managed by pyinfra (deploys/ingestor.py, data: group_data/ingestor.py): local edits are overwritten.\n"
        f"Every published port on {data.ingestor_bind_address}. Secrets: env/*.env (0600).\n"
        "Here: docker compose ps | logs -f <service> (docker-compose with compose v1)."
    )
    return to_yaml(stack(data, digests), header=header)


def env_files(data, values: dict[str, HiddenValue]) -> dict[str, str]:
    """The plan's .env.influxdb / .env.websocket / services' env, from data + secrets."""
    org, bucket = data.ingestor_influxdb_org, data.ingestor_influxdb_bucket
    influx = {"INFLUXDB_URL": "http://influxdb:8086", "INFLUXDB_TOKEN": values["INFLUXDB_TOKEN"],
              "INFLUXDB_ORG": org, "INFLUXDB_BUCKET": bucket}
    common = {**influx, "HOME_ASSISTANT_URL": data.home_assistant_url,
              "DATA_API_URL": "http://data-api:8006", "WEBSOCKET_INGESTION_URL": "http://websocket-ingestion:8001"}
    header = "Managed by pyinfra (deploys/ingestor.py) from group data + the operator's .env. Do not edit."
    return {
        "influxdb": env_file_text({
            "DOCKER_INFLUXDB_INIT_MODE": "setup",
            "DOCKER_INFLUXDB_INIT_USERNAME": data.ingestor_influxdb_user,
            "DOCKER_INFLUXDB_INIT_PASSWORD": values["INFLUXDB_PASSWORD"],
            "DOCKER_INFLUXDB_INIT_ORG": org,
            "DOCKER_INFLUXDB_INIT_BUCKET": bucket,
            "DOCKER_INFLUXDB_INIT_RETENTION": data.ingestor_influxdb_retention,
            "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN": values["INFLUXDB_TOKEN"],
            # the influx CLI in the container (bucket list, backup) reads these
            "INFLUX_TOKEN": values["INFLUXDB_TOKEN"],
            "INFLUX_ORG": org,
        }, header),
        "websocket": env_file_text({**common, "HOME_ASSISTANT_TOKEN": values["HOME_ASSISTANT_TOKEN"]}, header),
        "services": env_file_text(common, header),
    }


def release_plan(data, digests: dict[str, str], head: str | None) -> dict:
    """bin/ingestor-release's input (<dir>/release.json): data only, no secrets."""
    bind = data.ingestor_bind_address
    services = {}
    for group in data.ingestor_start_order:
        for name in group:
            spec = data.ingestor_services[name]
            url = f"http://{bind}:{spec['port']}{spec['health_path']}" if spec.get("health_path") else None
            services[name] = {"image": spec["image"], "health_url": url, "expect": spec.get("health_expect") or {},
                              "source_digest": digests.get(name)}
    bucket = data.ingestor_influxdb_bucket
    migrate_db = data.ingestor_sqlite[data.ingestor_migrate_service]
    return {
        "project": data.ingestor_compose_project,
        "dir": data.ingestor_dir,
        "compose_path": f"{data.ingestor_dir}/{data.ingestor_compose_file}",
        "cli": data.get("docker_compose_cli"),
        "groups": data.ingestor_start_order,
        "services": services,
        "sqlite": {s: {"volume": volume_name(data, db["volume"]), "file": db["file"]}
                   for s, db in data.ingestor_sqlite.items()},
        "influx": {
            "service": "influxdb",
            "bucket": bucket,
            "bucket_list": [a.replace("{bucket}", bucket) for a in data.ingestor_influx_bucket_list],
            "backup": list(data.ingestor_influx_backup),
            "manifest_glob": data.ingestor_influx_manifest_glob,
        },
        "migrate": {
            "service": data.ingestor_migrate_service,
            "command": list(data.ingestor_migrate_command),
            "head": head,
            "db": {"volume": volume_name(data, migrate_db["volume"]), "file": migrate_db["file"]},
            "tables": list(data.ingestor_expected_tables),
            "counted": ["devices", "entities"],
            "journal_mode": data.ingestor_journal_mode,
        },
        "queries": [{"url": f"http://{bind}:{data.ingestor_services['data-api']['port']}{path}", "target_ms": ms}
                    for path, ms in (data.ingestor_status_queries or {}).items()],
        "source_revision": source_revision(source_dir(data)),
        "backup_dir": data.ingestor_backup_dir,
        "keep": int(data.ingestor_backups_keep),
        "timeout_s": float(data.ingestor_health_timeout_s),
        "interval_s": float(data.get("health_interval_s") or 2),
    }


# ----------------------------------------------------------------------------- operations


def release_reasons(plan: dict, compose: str, env_ops) -> list[str]:
    """Why a release is needed (read from the host); empty: the stack is as wanted."""
    reasons = []
    if host.get_fact(Sha256File, path=plan["compose_path"]) != hashlib.sha256(compose.encode()).hexdigest():
        reasons.append("compose file differs")
    if _changed(env_ops):
        reasons.append("env files changed")
    running = host.get_fact(ComposeServices, project=plan["project"])
    down = [s for s in plan["services"] if (running.get(s) or {}).get("state") != "running"]
    if down:
        reasons.append(f"not running: {', '.join(down)}")
    built = {s: spec for s, spec in plan["services"].items() if spec["source_digest"]}
    labels = host.get_fact(ImageSources, images=[spec["image"] for spec in built.values()])
    stale = [s for s, spec in built.items() if labels.get(spec["image"]) != spec["source_digest"]]
    if stale:
        reasons.append(f"source changed: {', '.join(stale)}")
    if host.get_fact(File, path=f"{plan['dir']}/{PENDING}"):
        reasons.append("the previous release did not finish")
    m = plan["migrate"]
    db = host.get_fact(SqliteState, volume=m["db"]["volume"], file=m["db"]["file"], tables=m["tables"])
    if (db or {}).get("revision") != m["head"]:
        reasons.append(f"database at {(db or {}).get('revision')}, head is {m['head']}")
    return reasons


@operation()
def ingestor_release(plan: dict, compose: str, script: str, plan_path: str, env_ops=()):
    """Run bin/ingestor-release only when the stack differs from what is wanted."""
    reasons = release_reasons(plan, compose, env_ops)
    if not reasons:
        host.noop(f"ha-ingestor is up to date ({len(plan['services'])} services)")
        return
    cli = detected_cli() or "docker compose"
    host.log(f"release ({cli}): {'; '.join(reasons)}")
    compose_path = QuoteString(plan["compose_path"])
    # Removed by the script only when a release succeeds: files changed by this run but
    # never applied (a failed backup, an interrupted run) make the next run release again.
    yield StringCommand("mkdir -p", QuoteString(plan["dir"]), "&&", "touch", QuoteString(f"{plan['dir']}/{PENDING}"))
    yield StringCommand("if [ -f", compose_path, "]; then cp -p", compose_path,
                        QuoteString(plan["compose_path"] + ".previous"), "; fi")
    directory, compose_file = plan["compose_path"].rsplit("/", 1)
    yield from stage_and_validate(cli, plan["project"], directory, compose_file, compose, None, None, [],
                                  host.get_fact(Sha256File, path=plan["compose_path"]), None)
    yield StringCommand(QuoteString(script), "release", QuoteString(plan_path))


def health_check(plan: dict, services: list[str]):
    """A `wait_until` check: every service's /health JSON says what the plan expects."""

    def check():
        bad = []
        for name in services:
            spec = plan["services"][name]
            for path, want in (spec["expect"] or {None: None}).items():
                got = host.get_fact(HttpHealth, url=spec["health_url"], json_field=path)
                value = (got or {}).get("field")
                if not (got or {}).get("ok") or (path and str(value).lower() != str(want).lower()):
                    bad.append(f"{name}: {path or 'status'}={value if path else (got or {}).get('status')!r}"
                               f"{' ' + got['error'] if got and got.get('error') else ''}")
        return (not bad), ("; ".join(bad) or f"{len(services)} services healthy")

    return check


def loopback_check(ports: list[int]):
    def check():
        sockets = host.get_fact(ListeningSockets)
        exposed = [p for p in ports if not is_loopback_only(sockets, p, "tcp")]
        return not exposed, (f"not loopback-only: {exposed}" if exposed else f"{len(ports)} ports on loopback only")

    return check


@operation()
def discover_devices(url: str, volume: str, file: str):
    """POST the discovery trigger (from the host) only while the devices table is empty."""
    db = host.get_fact(SqliteState, volume=volume, file=file, tables=["devices"])
    count = ((db or {}).get("counts") or {}).get("devices")
    if count:
        host.noop(f"{count} devices known: no discovery")
        return
    yield StringCommand("python3", "-c", QuoteString(
        "import sys, urllib.request; r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=b'', "
        "method='POST'), timeout=60); print('discovery:', r.status, r.read(300).decode())"), QuoteString(url))


def devices_check(volume: str, file: str):
    def check():
        db = host.get_fact(SqliteState, volume=volume, file=file, tables=["devices", "entities"])
        counts = (db or {}).get("counts") or {}
        ok = counts.get("devices", 0) > 0 and counts.get("entities", 0) > 0
        return ok, f"devices={counts.get('devices', 0)} entities={counts.get('entities', 0)}"

    return check


# ----------------------------------------------------------------------------- phases


def uses_sudo(data) -> bool:
    """Sudo from the inventory (`_sudo` host data) or the command line (`--sudo`)."""
    from pyinfra.context import ctx_state, state

    return bool(data.get("_sudo") or (ctx_state.isset() and getattr(state.config, "SUDO", False)))


def checked_preflight(data, values: dict[str, HiddenValue]) -> None:
    """Everything that must hold before the first change, reported together."""
    ports = {spec["port"]: "docker.service" for spec in data.ingestor_services.values() if spec.get("port")}
    problems = collect_problems(ports=ports, secrets=data.required_secrets)
    version = host.get_fact(DockerServerVersion)
    minimum = str(data.ingestor_docker_min_version or "0")
    if version and version_tuple(version) < version_tuple(minimum):
        problems.append(f"Docker {version} is older than {minimum}")
    if data.ingestor_check_home_assistant:
        # Under sudo the token would sit in sudo's argv (see HomeAssistantApi): probe
        # reachability only; a rejected token then fails the websocket health gate.
        token = None if uses_sudo(data) else values["HOME_ASSISTANT_TOKEN"]
        answer = host.get_fact(HomeAssistantApi, url=data.home_assistant_url, token=token)
        if problem := home_assistant_problem(data.home_assistant_url, answer, token_sent=token is not None):
            problems.append(problem)
    if not source_dir(data).is_dir():
        problems.append(f"ingestor_source {source_dir(data)} is not a directory (the source checkout)")
    if problems:
        raise PreflightFailed(f"preflight failed on {host.name}: " + "; ".join(problems))
    host.noop("preflight checks passed")


@deploy("Layout, source and env files")
def layout(data, values):
    base = data.ingestor_dir
    files.directory(name=base, path=base, user="root", group="root", mode="755")
    files.directory(name=f"{base}/bin", path=f"{base}/bin", user="root", group="root", mode="755")
    files.directory(name=f"{base}/env", path=f"{base}/env", user="root", group="root", mode="700")
    files.directory(name=data.ingestor_backup_dir, path=data.ingestor_backup_dir, user="root", group="root", mode="700")
    files.put(name=f"{base}/bin/ingestor-release", src=StringIO(RELEASE_SCRIPT), dest=f"{base}/bin/ingestor-release",
              user="root", group="root", mode="755")
    files.sync(name=f"Source checkout -> {base}/src", src=str(source_dir(data)), dest=f"{base}/src", delete=True,
               exclude=data.ingestor_source_exclude, exclude_dir=data.ingestor_source_exclude_dirs,
               add_deploy_dir=False)
    return [secret_file(name=f"{base}/env/{name}.env (secrets not shown)", dest=f"{base}/env/{name}.env",
                        content=HiddenValue(text))
            for name, text in env_files(data, values).items()]


def main(data):
    check_config(data)
    values = secrets.get(list(data.required_secrets))
    checked_preflight(data, values)
    docker_host()
    env_ops = layout(data, values)
    digests = source_digests(data)
    head = alembic_head(source_dir(data) / data.ingestor_alembic_versions)
    plan = release_plan(data, digests, head)
    base = data.ingestor_dir
    plan_path = f"{base}/release.json"
    files.put(name=plan_path, src=StringIO(json.dumps(plan, indent=1, sort_keys=True) + "\n"), dest=plan_path,
              user="root", group="root", mode="644")
    ingestor_release(name=f"Release ha-ingestor ({len(plan['services'])} services, only when changed)",
                     plan=plan, compose=render_compose(data, digests), script=f"{base}/bin/ingestor-release",
                     plan_path=plan_path, env_ops=env_ops)
    checked = [s for s, spec in plan["services"].items() if spec["health_url"]]
    timeout = float(data.ingestor_health_timeout_s)
    interval = float(data.get("health_interval_s") or 2)
    wait_until(name="Health JSON of every service as the plan expects", check=health_check(plan, checked),
               description="ha-ingestor /health", timeout_s=timeout, interval_s=interval)
    ports = sorted(spec["port"] for spec in data.ingestor_services.values() if spec.get("port"))
    wait_until(name=f"Published ports on {data.ingestor_bind_address} only", check=loopback_check(ports),
               description="published ports", timeout_s=10, interval_s=2)
    m = plan["migrate"]["db"]
    discover_devices(name="Device discovery (only while no devices are known)", url=data.ingestor_discovery_url,
                     volume=m["volume"], file=m["file"])
    wait_until(name="Devices and entities in SQLite", check=devices_check(m["volume"], m["file"]),
               description="discovery", timeout_s=float(data.ingestor_discovery_timeout_s), interval_s=interval)


# (`ctx_host.isset()`: unit tests import this module's helpers outside a pyinfra run.)
if ctx_host.isset() and "ingestor" in host.groups:
    main(host.data)
