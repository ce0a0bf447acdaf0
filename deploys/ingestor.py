"""ha-ingestor (Epic 22/23): the user's own checkout and compose file, on a Docker host.

    pyinfra inventory.py deploys/ingestor.py                   # disposable test hosts
    DEPLOY_ENV=prod pyinfra inventory.py deploys/ingestor.py   # ha-ingestor.local
    make ingestor-status                                       # the plan's success criteria

The stack is upstream's docker-compose.yml (wtthornton/ha-ingestor bbc4ab4) plus our
override (`compose -f theirs -f ours`, project directory = the synced checkout): container
names, env names, volumes and network stay upstream's; the override only moves every
published port to 127.0.0.1 (`ports: !override`, compose v2 >= 2.24.4), tags and labels
the built images, sets restart policy / limits / healthcheck timing when asked.

Phases: preflight (config, secrets, Docker - or, not installed yet, the version the
package source would install; checked again after the install - compose v2, disk, Home
Assistant accepts the token, which is 32-300 letters, digits, ._- as websocket-ingestion requires, ports free; nothing changes on failure) -> Docker host -> layout: checkout synced to
<dir>/src (one tar, only when its content hash differs: deploys/parts/tree_sync), the env
and compose files the running stack reads kept before the first release record, the env files upstream's compose names written from ITS templates + secrets
(0600), compose's interpolation env (0600) -> the release, only when something differs, as the transient systemd unit
ingestor-release.service (deploys/parts/host_steps: an SSH drop cannot cut it short; the
next apply waits for an unfinished one before it syncs anything): bin/ingestor-release
validates the merged config (every port on loopback, reports the services we do not
manage), builds what changed (rebuild key: the service's files, its Dockerfile, its `build:`
section in the user's compose file and the build args - the image label - and the base image each FROM resolves to on the host, recorded
in <dir>/builds.json), takes verified backups just before the switch, and starts the
managed services group by group, health-gated; data-api's migrations run from the
checkout's alembic/ in a one-off container of the new image on the SQLite volume before
the new data-api starts (`stamp head` when create_all already made head's tables). A
healthy release is kept as <dir>/releases/stack/<id> (compose files, env files, image ids
and `:rel-<id>` tags; the live link <dir>/stack; a history line - the release records
library's layout (deploys/parts/release_records.py), so `make releases`/`make rollback
DEPLOY=ingestor` list them and go back, and its prune keeps ingestor_keep_releases); on the first run against a
hand-deployed stack that stack is recorded instead, and the one record of the earlier
layout (<dir>/live) is adopted. Any failure rolls back to the live release: images,
compose and env files, SQLite -> gates: health JSON, loopback ports, devices in SQLite
only with ingestor_discovery_gate. A rollback (`release_action=rollback`) runs
`ingestor-release rollback PLAN RID` as the same transient unit.

Fixed from the plan: no `compose exec data-api alembic upgrade head` (the image has no
alembic.ini; after create_all, 002 fails with "table devices already exists"); no
`POST :8001/api/discover` (upstream serves /health and /ws only: it discovers by itself);
no `docker-compose down`, no global `image prune`, never `rm metadata.db`; bounded polls.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import subprocess
from io import BytesIO, StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.context import ctx_host, state
from pyinfra.facts.files import File, Sha256File
from pyinfra.operations import files

from deploys import secrets
from deploys.parts import deploy_lock, releases
from deploys.errors import ConfigError, PreflightFailed
from deploys.operations import secret_file, wait_until
from deploys.parts.compose import (
    _changed, build_args, build_sections, cli_args, compose_outline, detected_cli, env_file_text, loopback_ports, override_cli_problem,
    override_document, to_yaml,
)
from deploys.parts.docker_host import docker_host
from deploys.parts.host_steps import UnitState, host_step, unfinished, wait_for_step
from deploys.parts.preflight import collect_problems
from deploys.parts.release_records import release_records_installed
from deploys.parts.tree_sync import Tree, read_tree, tree_sync
from deploys.templating import TEMPLATES
from facts import prefetch
from facts.compose import ComposeServices
from facts.http import HttpHealthMany
from facts.ingestor import (
    AptCandidates,
    BuildBases,
    DockerServerVersion,
    HomeAssistantApi,
    SqliteState,
    home_assistant_problem,
    stale_bases,
    version_tuple,
)
from facts.sockets import ListeningSockets, is_loopback_only

REPO = Path(__file__).resolve().parent.parent
RELEASE_SCRIPT = (TEMPLATES / "opt/ha-ingestor/bin/ingestor-release").read_text()
SOURCE_LABEL = "ingestor.source"
PENDING = ".release-pending"  # bin/ingestor-release removes it after a successful release
RELEASE_UNIT = "ingestor-release"  # the release runs as this transient systemd unit
LEGACY_RECORD = "live/release.json"  # the one record of the layout before releases/stack (adopted)
STACK = "stack"  # the one component of the release series: <dir>/releases/stack/<rid>, live link <dir>/stack
OVERRIDE_FILE = "docker-compose.override.yml"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_REVISION = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*['\"]?([^'\"\s]*)['\"]?\s*$", re.M)
_ENV_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_TEMPLATE_PLACEHOLDER = re.compile(r"^your_.*_here$", re.I)
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", re.I | re.M)
_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)\s*$", re.M)
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
BUILDS = "builds.json"  # bin/ingestor-release: built image id -> {FROM ref: base image id}
# upstream's websocket-ingestion refuses any other token before it connects
# (wtthornton/ha-ingestor bbc4ab4 services/websocket-ingestion/src/token_validator.py:
# min_length 32, max_length 300, ^[a-zA-Z0-9._-]+$), so it would never subscribe
HA_TOKEN_LENGTH = (32, 300)
_HA_TOKEN = re.compile(r"^[a-zA-Z0-9._-]+$")


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
        port = spec.get("port")
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            problems.append(f"ingestor_services[{name!r}].port = {port!r} is not a TCP port")
        elif port is not None:
            ports.append(port)
        if spec.get("health_path") and port is None:
            problems.append(f"ingestor_services[{name!r}] has a health_path but no port")
        if not isinstance(spec.get("source", []), list):
            problems.append(f"ingestor_services[{name!r}].source must be a list of checkout paths")
    if len(ports) != len(set(ports)):
        problems.append(f"ports are not unique: {sorted(ports)}")
    ordered = [s for group in data.ingestor_start_order or [] for s in group]
    if sorted(ordered) != sorted(services) or len(ordered) != len(set(ordered)):
        problems.append(f"ingestor_start_order must name every service once: {ordered} vs {sorted(services)}")
    if data.ingestor_migrate_service not in (data.ingestor_sqlite or {}):
        problems.append(f"ingestor_migrate_service {data.ingestor_migrate_service!r} has no ingestor_sqlite entry")
    if "influxdb" not in services:
        problems.append("ingestor_services has no 'influxdb'")
    if not _NAME.match(str(data.ingestor_compose_project or "")):
        problems.append(f"ingestor_compose_project {data.ingestor_compose_project!r} is not a valid compose name")
    for name, limit in (data.ingestor_memory_limits or {}).items():
        if not re.match(r"^\d+[kKmMgG]$", str(limit)):
            problems.append(f"ingestor_memory_limits[{name!r}] = {limit!r} must look like 256M")
    if data.get("release_action") not in (None, "", *releases.RELEASE_ACTIONS):
        problems.append(f"release_action {data.get('release_action')!r} is not one of {', '.join(releases.RELEASE_ACTIONS)}")
    if not (isinstance(data.ingestor_keep_releases, int) and data.ingestor_keep_releases >= 1):
        problems.append(f"ingestor_keep_releases = {data.ingestor_keep_releases!r} must be at least 1")
    if problems:
        raise ConfigError("ingestor: " + "; ".join(problems))


def theirs(data) -> tuple[str, dict[str, dict]]:
    """Upstream's compose file (text) and its outline; names every missing managed service."""
    path = source_dir(data) / data.ingestor_compose_file
    if not path.is_file():
        raise ConfigError(f"ingestor: {path} does not exist (the checkout's compose file)")
    text = path.read_text()
    outline = compose_outline(text)
    missing = [s for s in data.ingestor_services if s not in outline]
    if missing:
        raise ConfigError(f"ingestor: {path} has no service {', '.join(missing)} (ingestor_services)")
    return text, outline


def source_dir(data) -> Path:
    """The user's checkout (relative paths: relative to this repository)."""
    path = Path(str(data.ingestor_source)).expanduser()
    return path if path.is_absolute() else REPO / path


def source_tree(data) -> Tree:
    """The checkout as synced to <dir>/src (deploys/parts/tree_sync: one tar, content-keyed)."""
    return read_tree(source_dir(data), data.ingestor_source_exclude or [], data.ingestor_source_exclude_dirs or [])


def dockerfile_of(spec: dict) -> str:
    """The service's Dockerfile in the checkout (`dockerfile`, else <first source>/Dockerfile)."""
    return spec.get("dockerfile") or f"{spec['source'][0].rstrip('/')}/Dockerfile"


def dockerfile_bases(text: str, args: dict | None = None) -> list[str]:
    """The images a Dockerfile builds FROM (not its own stages, not scratch), with
    `${ARG}`s resolved from its ARG defaults and the build args."""
    values = dict(_ARG.findall(text))
    values.update({k: str(v) for k, v in (args or {}).items()})
    stages, refs = set(), []
    for ref, stage in _FROM.findall(text):
        ref = _VAR.sub(lambda m: values.get(m.group(1), m.group(0)), ref)
        if ref.lower() not in stages and ref != "scratch" and ref not in refs:
            refs.append(ref)
        if stage:
            stages.add(stage.lower())
    return refs


def upstream_builds(data) -> dict[str, list[str]]:
    """Each service's `build:` section in the user's compose file (empty: none there)."""
    path = source_dir(data) / data.ingestor_compose_file
    return build_sections(path.read_text()) if path.is_file() else {}


def service_build_args(data, name: str, builds: dict[str, list[str]]) -> dict[str, str]:
    """The build args compose passes: the user's `build.args`, ingestor_build_args over them
    (our override's `build.args` merges by key)."""
    return {**build_args(builds.get(name) or []), **{k: str(v) for k, v in (data.ingestor_build_args or {}).items()}}


def service_bases(data) -> dict[str, list[str]]:
    root = source_dir(data)
    builds = upstream_builds(data)
    out = {}
    for name, spec in data.ingestor_services.items():
        if spec.get("source"):
            path = root / dockerfile_of(spec)
            if not path.is_file():
                raise ConfigError(f"ingestor: {path} does not exist (the Dockerfile of {name}; "
                                  f"set ingestor_services[{name!r}].dockerfile)")
            out[name] = dockerfile_bases(path.read_text(), service_build_args(data, name, builds))
    return out


def tree_digest(root: Path, paths: list[str], files: list[Path], extra: str = "") -> str:
    """SHA-256 over the synced files under `paths` (names, exec bit, content) and `extra`
    (the Dockerfile and the build args): the image label that decides a rebuild. The base
    image is the other part of the key (bin/ingestor-release's builds.json)."""
    digest = hashlib.sha256(extra.encode() + b"\0")
    for path in files:
        rel = path.relative_to(root).as_posix()
        if any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths):
            digest.update(rel.encode() + b"\0" + (b"x" if path.stat().st_mode & 0o100 else b"-"))
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def source_digests(data, tree: Tree | None = None) -> dict[str, str]:
    root = source_dir(data)
    synced = (tree or source_tree(data)).paths()
    builds = upstream_builds(data)
    out = {}
    for name, spec in data.ingestor_services.items():
        if spec.get("source"):
            dockerfile = root / dockerfile_of(spec)
            # the build args compose passes, and the user's whole build section (context,
            # target, args as written): a change to either rebuilds
            args = json.dumps(service_build_args(data, name, builds), sort_keys=True)
            section = "\n".join(builds.get(name) or [])
            extra = (f"{args}\0{section}\0{dockerfile_of(spec)}\0"
                     + (dockerfile.read_text() if dockerfile.is_file() else ""))
            out[name] = tree_digest(root, spec["source"], synced, extra)
    return out


def source_revision(root: Path) -> dict | None:
    """The checkout's git commit and whether it has local changes, recorded in every backup."""
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


# ----------------------------------------------------------------------------- files we write


def value_context(data, values: dict[str, HiddenValue]) -> dict[str, str]:
    """What `{name}` in ingestor_env_files / ingestor_compose_env may name."""
    url = str(data.home_assistant_url).rstrip("/")
    ws = re.sub(r"^http", "ws", url) + "/api/websocket"
    context = {"home_assistant_url": url, "home_assistant_ws_url": ws,
               "influxdb_org": data.ingestor_influxdb_org, "influxdb_bucket": data.ingestor_influxdb_bucket,
               "influxdb_user": data.ingestor_influxdb_user}
    context.update({k: v.unmask() for k, v in values.items()})
    return context


def _fill(template: str, context: dict[str, str], where: str) -> str:
    try:
        return template.format_map(context)
    except KeyError as exc:
        raise ConfigError(f"ingestor: {where} names {{{exc.args[0]}}}, which is neither a secret nor a known value") from None


def env_from_template(template: str, values: dict[str, str], name: str) -> str:
    """The template's lines, with `values` set (keys it lacks appended); a placeholder the
    operator did not replace is refused (naming the key, never a value)."""
    out, seen, unset = [], set(), []
    for line in template.splitlines():
        match = _ENV_LINE.match(line.strip())
        if not match:
            out.append(line)
            continue
        key = match.group(1)
        seen.add(key)
        if key in values:
            out.append(f"{key}={values[key]}")
        else:
            if _TEMPLATE_PLACEHOLDER.match(match.group(2).strip()):
                unset.append(key)
            out.append(line.strip())
    out += [f"{k}={v}" for k, v in values.items() if k not in seen]
    if unset:
        raise ConfigError(f"ingestor: {name}: {', '.join(unset)} still hold the template's placeholder "
                          "(set them in ingestor_env_files)")
    env_file_text({k: v for k, v in values.items()})  # the same value rules as compose's env files
    return "\n".join(out) + "\n"


def env_files(data, values: dict[str, HiddenValue]) -> dict[str, str]:
    """checkout-relative path -> content of each env file upstream's compose names."""
    context = value_context(data, values)
    root = source_dir(data)
    out = {}
    for path, spec in (data.ingestor_env_files or {}).items():
        template = root / spec["template"]
        if not template.is_file():
            raise ConfigError(f"ingestor: the template {template} of {path} does not exist")
        wanted = {k: _fill(str(v), context, f"ingestor_env_files[{path!r}].{k}") for k, v in spec["values"].items()}
        out[path] = env_from_template(template.read_text(), wanted, path)
    return out


def compose_env(data, values: dict[str, HiddenValue]) -> str:
    context = value_context(data, values)
    return env_file_text({k: _fill(str(v), context, f"ingestor_compose_env.{k}")
                          for k, v in (data.ingestor_compose_env or {}).items()},
                         "Managed by pyinfra (deploys/ingestor.py): compose's interpolation variables. Do not edit.")


def override(data, outline: dict[str, dict], digests: dict[str, str]) -> str:
    """Our override of upstream's compose file: only what the plan changes."""
    bind = data.ingestor_bind_address
    services: dict[str, dict] = {}
    for name, spec in outline.items():
        if spec["ports"]:
            services[name] = {"ports": loopback_ports(spec["ports"], bind)}
    for name, spec in data.ingestor_services.items():
        entry = services.setdefault(name, {})
        if spec.get("image"):
            entry["image"] = spec["image"]
        if name in digests:
            build = {"labels": {SOURCE_LABEL: digests[name]}}
            if data.ingestor_build_args:
                build["args"] = {k: str(v) for k, v in data.ingestor_build_args.items()}
            entry["build"] = build
        if data.ingestor_restart_policy:
            entry["restart"] = data.ingestor_restart_policy
        if (data.ingestor_memory_limits or {}).get(name):
            entry["deploy"] = {"resources": {"limits": {"memory": str(data.ingestor_memory_limits[name])}}}
        if data.ingestor_healthcheck_timing:
            entry["healthcheck"] = dict(data.ingestor_healthcheck_timing)
    header = ("Managed by pyinfra (deploys/ingestor.py): our override of the checkout's docker-compose.yml.\n"
              f"Every published port on {bind}. Here: {OVERRIDE_FILE} is merged after theirs.")
    return to_yaml(override_document(services), header=header)


# ----------------------------------------------------------------------------- the release plan


def volume_name(data, volume: str) -> str:
    return f"{data.ingestor_compose_project}_{volume}"


def release_plan(data, digests: dict[str, str], head: str | None, outline: dict[str, dict],
                 bases: dict[str, list[str]] | None = None) -> dict:
    """bin/ingestor-release's input (<dir>/release.json): data only, no secrets."""
    base, bind = data.ingestor_dir, data.ingestor_bind_address
    services = {}
    for group in data.ingestor_start_order:
        for name in group:
            spec = data.ingestor_services[name]
            url = f"http://{bind}:{spec['port']}{spec['health_path']}" if spec.get("health_path") else None
            services[name] = {"image": spec.get("image"), "health_url": url, "expect": spec.get("health_expect") or {},
                              "source_digest": digests.get(name), "bases": (bases or {}).get(name, [])}
    bucket = data.ingestor_influxdb_bucket
    migrate_db = data.ingestor_sqlite[data.ingestor_migrate_service]
    return {
        "project": data.ingestor_compose_project,
        "dir": base,
        "project_directory": f"{base}/src",
        "compose_files": [f"{base}/compose/{data.ingestor_compose_file}", f"{base}/compose/{OVERRIDE_FILE}"],
        "env_file": f"{base}/env/compose.env",
        "env_files": [f"{base}/src/{p}" for p in (data.ingestor_env_files or {})] + [f"{base}/env/compose.env"],
        # checkout-relative: where a hand-deployed stack keeps them (recorded on the first run)
        "env_file_names": list(data.ingestor_env_files or {}),
        "pre_record_files": pre_record_paths(data),  # kept as `*.previous` (keep_pre_record_files)
        "bind_address": bind,
        "cli": data.get("docker_compose_cli"),
        "groups": data.ingestor_start_order,
        "services": services,
        "unmanaged": sorted(s for s in outline if s not in services),
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
            "image": data.ingestor_services[data.ingestor_migrate_service]["image"],
            "alembic_dir": f"{base}/src/{data.ingestor_alembic_dir}",
            "workdir": data.ingestor_alembic_workdir,
            "head": head,
            "db": {"volume": volume_name(data, migrate_db["volume"]), "file": migrate_db["file"]},
            "tables": list(data.ingestor_expected_tables),
            "counted": ["devices", "entities"] if data.ingestor_discovery_gate else [],
            "journal_mode": data.ingestor_journal_mode,
        },
        "queries": [{"url": f"http://{bind}:{data.ingestor_services['data-api']['port']}{path}", "target_ms": ms}
                    for path, ms in (data.ingestor_status_queries or {}).items()],
        "source_revision": source_revision(source_dir(data)),
        "backup_dir": data.ingestor_backup_dir,
        "keep": int(data.ingestor_backups_keep),
        "keep_releases": int(data.ingestor_keep_releases),
        "rollback_restores_data": bool(data.ingestor_rollback_restores_data),
        "timeout_s": float(data.ingestor_health_timeout_s),
        "rollback_timeout_s": float(data.ingestor_rollback_health_timeout_s or data.ingestor_health_timeout_s),
        "release_timeout_s": int(data.ingestor_release_timeout_s or 7200),
        "interval_s": float(data.get("health_interval_s") or 2),
    }


# ----------------------------------------------------------------------------- operations


def release_reasons(plan: dict, wanted: dict[str, str], env_ops) -> list[str]:
    """Why a release is needed (read from the host); empty: the stack is as wanted."""
    reasons = [f"{path.rsplit('/', 1)[1]} differs" for path, text in wanted.items()
               if host.get_fact(Sha256File, path=path) != hashlib.sha256(text.encode()).hexdigest()]
    if _changed(env_ops):
        reasons.append("env files changed")
    running = host.get_fact(ComposeServices, project=plan["project"])
    down = [s for s in plan["services"] if (running.get(s) or {}).get("state") != "running"]
    if down:
        reasons.append(f"not running: {', '.join(down)}")
    built = {s: spec for s, spec in plan["services"].items() if spec["source_digest"]}
    refs = sorted({r for spec in built.values() for r in spec["bases"]})
    # one inspect of the images and their bases: ids and source labels (facts.ingestor.BuildBases)
    bases = host.get_fact(BuildBases, builds_path=f"{plan['dir']}/{BUILDS}",
                          images=[spec["image"] for spec in built.values()], refs=refs)
    stale = [s for s, spec in built.items() if bases["labels"].get(spec["image"]) != spec["source_digest"]]
    if stale:
        reasons.append(f"source changed: {', '.join(stale)}")
    moved = [s for s, spec in built.items() if s not in stale and stale_bases(spec["image"], spec["bases"], bases)]
    if moved:
        reasons.append(f"base image changed: {', '.join(moved)}")
    if host.get_fact(File, path=f"{plan['dir']}/{PENDING}"):
        reasons.append("the previous release did not finish")
    if unfinished(host.get_fact(UnitState, unit=RELEASE_UNIT)):
        reasons.append(f"{RELEASE_UNIT}.service is still running (an apply was cut off)")
    m = plan["migrate"]
    db = host.get_fact(SqliteState, volume=m["db"]["volume"], file=m["db"]["file"], tables=m["tables"])
    if (db or {}).get("revision") != m["head"]:
        reasons.append(f"database at {(db or {}).get('revision')}, head is {m['head']}")
    return reasons


def stage_compose_files(cli: str, plan: dict, wanted: dict[str, str]):
    """Commands: keep the live files as `*.previous` (the release's rollback), upload what
    differs as `*.new`, validate the merged config with compose, move them into place. A
    config compose rejects removes the `*.new` files; the live ones stay."""
    directory = plan["compose_files"][0].rsplit("/", 1)[0]
    yield StringCommand("mkdir", "-p", QuoteString(directory))
    staged = []
    for path, text in wanted.items():
        yield StringCommand("if [ -f", QuoteString(path), "]; then cp -p", QuoteString(path),
                            QuoteString(path + ".previous"), "; fi")
        if host.get_fact(Sha256File, path=path) != hashlib.sha256(text.encode()).hexdigest():
            yield FileUploadCommand(BytesIO(text.encode()), path + ".new")
            yield StringCommand("chmod", "644", QuoteString(path + ".new"))
            staged.append(path)
    if not staged:
        return
    files_now = [p + ".new" if p in staged else p for p in plan["compose_files"]]
    check = cli_args(cli, plan["project"], files_now, plan["env_file"], project_directory=plan["project_directory"])
    moves = []
    for path in staged:
        moves += ["&&", "mv", "-f", QuoteString(path + ".new"), QuoteString(path)]
    yield StringCommand(
        "if ! out=$(", *check, "config -q 2>&1); then",
        "rm -f", *[QuoteString(p + ".new") for p in staged], ";",
        "echo", QuoteString(f"compose rejected the new config of {plan['project']} (the live files are unchanged):"),
        ">&2;", 'echo "$out" >&2; exit 1; fi', *moves,
    )


def release_meta() -> dict:
    """What the history records of a run besides the ids (as music's and youtube's do)."""
    commit, dirty = deploy_lock.git_revision()
    return {"commit": commit, "dirty": dirty, "by": f"{deploy_lock.operator()}@{host.name}"}


@operation()
def ingestor_release(plan: dict, wanted: dict[str, str], script: str, plan_path: str, env_ops=()):
    """Run bin/ingestor-release only when the stack differs from what is wanted."""
    reasons = release_reasons(plan, wanted, env_ops)
    if not reasons:
        host.noop(f"ha-ingestor is up to date ({len(plan['services'])} managed services)")
        return
    cli = detected_cli() or "docker compose"
    host.log(f"release ({cli}): {'; '.join(reasons)}")
    # Removed by the script only when a release succeeds (or a rollback completes): files
    # changed by this run but never applied make the next run release again.
    yield StringCommand("mkdir -p", QuoteString(plan["dir"]), "&&", "touch", QuoteString(f"{plan['dir']}/{PENDING}"))
    yield from stage_compose_files(cli, plan, wanted)
    # A transient unit: an SSH drop or a pyinfra timeout cannot cut the release (or its
    # rollback) short; the next apply waits for an unfinished one (deploys/parts/host_steps).
    yield host_step(RELEASE_UNIT, [script, "release", plan_path, json.dumps(release_meta(), sort_keys=True)],
                    "ha-ingestor release (deploys/ingestor.py)", timeout_s=int(plan["release_timeout_s"]))


@operation()
def legacy_record_adopted(base: str, script: str, plan_path: str):
    """A host released by the code before release records: its `<dir>/live` becomes the
    live release of the series (bin/ingestor-release adopt), so `make releases` lists it
    and `make rollback` can go back to it. Once: then `<dir>/stack` exists."""
    if not host.get_fact(File, path=f"{base}/{LEGACY_RECORD}") or host.get_fact(File, path=f"{base}/{STACK}/release.json"):
        host.noop("no release record of the earlier layout")
        return
    yield StringCommand(QuoteString(script), "adopt", QuoteString(plan_path),
                        QuoteString(json.dumps(release_meta(), sort_keys=True)))


@operation()
def ingestor_rolled_back(plan_path: str, script: str, target: dict, timeout_s: int):
    """`make rollback DEPLOY=ingestor [TO=id]`: bin/ingestor-release rollback (and its
    prune), as the transient unit a release runs as (an SSH drop cannot cut it short)."""
    rid = target["components"][STACK]
    host.log(f"rolling ha-ingestor back to release {target['id']} ({STACK} {rid}, deployed {target.get('at')}, "
             f"commit {(target.get('commit') or '?')[:12]})")
    yield host_step(RELEASE_UNIT, [script, "rollback", plan_path, rid, json.dumps(release_meta(), sort_keys=True)],
                    "ha-ingestor rollback (deploys/ingestor.py)", timeout_s=timeout_s)


def expected(value, want) -> bool:
    """A health JSON value as the plan expects it (a list: any of them)."""
    wanted = want if isinstance(want, list) else [want]
    return str(value).lower() in [str(w).lower() for w in wanted]


def health_check(plan: dict, services: list[str]):
    """A `wait_until` check: every service's health JSON says what the plan expects (all
    asked at once: one python3 on the host, facts.http.HttpHealthMany)."""
    wanted = [(name, path, want) for name in services
              for path, want in (plan["services"][name]["expect"] or {None: None}).items()]
    probes = [{"url": plan["services"][name]["health_url"], "json_field": path} for name, path, _ in wanted]

    def check():
        answers = host.get_fact(HttpHealthMany, probes=probes) or []
        bad = []
        for (name, path, want), got in zip(wanted, answers + [None] * (len(wanted) - len(answers))):
            value = (got or {}).get("field")
            if not (got or {}).get("ok") or (path and not expected(value, want)):
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


def stack_check(plan: dict, services: list[str], ports: list[int]):
    """Both: every service's health JSON as the plan expects, and every published port on
    loopback only."""
    checks = (health_check(plan, services), loopback_check(ports))

    def check():
        results = [c() for c in checks]
        return all(ok for ok, _ in results), "; ".join(observed for _, observed in results)

    return check


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


def token_problem(token: str) -> str | None:
    """What upstream's TokenValidator would refuse in HOME_ASSISTANT_TOKEN (never the token)."""
    low, high = HA_TOKEN_LENGTH
    where = "websocket-ingestion refuses it (upstream's token_validator.py)"
    if len(token) < low:
        return f"HOME_ASSISTANT_TOKEN is {len(token)} characters, shorter than {low}: {where}"
    if len(token) > high:
        return f"HOME_ASSISTANT_TOKEN is {len(token)} characters, longer than {high}: {where}"
    if not _HA_TOKEN.match(token):
        return f"HOME_ASSISTANT_TOKEN has characters other than letters, digits, '.', '_', '-': {where}"
    return None


def checked_preflight(data, values: dict[str, HiddenValue]) -> None:
    """Everything that must hold before the first change, reported together."""
    ports = {spec["port"]: "docker.service" for spec in data.ingestor_services.values() if spec.get("port")}
    problems = collect_problems(ports=ports, secrets=data.required_secrets)
    if values.get("HOME_ASSISTANT_TOKEN") and (problem := token_problem(values["HOME_ASSISTANT_TOKEN"].unmask())):
        problems.append(problem)
    version = host.get_fact(DockerServerVersion)
    minimum = str(data.ingestor_docker_min_version or "0")
    if version and version_tuple(version) < version_tuple(minimum):
        problems.append(f"Docker {version} is older than {minimum}")
    if not version and (problem := docker_candidate_problem(data, minimum)):
        problems.append(problem)
    if version and (problem := override_cli_problem(detected_cli(), None)):
        problems.append(problem)
    if data.ingestor_check_home_assistant:
        # Under sudo the token would sit in sudo's argv (see HomeAssistantApi): probe
        # reachability only; a rejected token then fails the websocket health gate.
        token = None if uses_sudo(data) else values["HOME_ASSISTANT_TOKEN"]
        answer = host.get_fact(HomeAssistantApi, url=data.home_assistant_url, token=token)
        if problem := home_assistant_problem(data.home_assistant_url, answer, token_sent=token is not None):
            problems.append(problem)
    if problems:
        raise PreflightFailed(f"preflight failed on {host.name}: " + "; ".join(problems))
    host.noop("preflight checks passed")


def docker_candidate_problem(data, minimum: str) -> str | None:
    """Docker not installed yet: the version the configured package source would install
    (`apt-cache policy`; Docker's own repository is added later, so it is checked after the
    install instead, by docker_version_gate)."""
    if (data.get("docker_package_source") or "distro") != "distro":
        return None
    packages = list(data.get("docker_packages") or ["docker.io"])
    candidates = host.get_fact(AptCandidates, packages=packages)
    engine = packages[0]
    found = candidates.get(engine)
    if found and version_tuple(found) < version_tuple(minimum):
        return (f"Docker is not installed and the package source would install {engine} {found}, older than "
                f"{minimum} (ingestor_docker_min_version; docker_package_source = \"docker\" installs Docker's own)")
    return None


def docker_version_gate(data) -> None:
    """After the Docker host part, before any release step: the engine that now runs is
    new enough (preflight could not ask an engine that was not there)."""
    minimum = str(data.ingestor_docker_min_version or "0")

    def check():
        version = host.get_fact(DockerServerVersion)
        ok = bool(version) and version_tuple(version) >= version_tuple(minimum)
        return ok, (f"Docker {version}" if version else "no Docker engine answers") + f" (minimum {minimum})"

    docker_engine_gate(name=f"Docker >= {minimum} runs (checked again after the install)", check=check)


@operation(is_idempotent=True)
def docker_engine_gate(check):
    """The version gate: when nothing ran on the host since this run's fact prefetch (the
    Docker host part changed nothing), the engine preflight found is the one that runs, and
    its reading (taken in this run, after the lock) answers; else the engine is polled."""
    if state.is_executing and prefetch.unchanged():
        ok, observed = check()
        if ok:
            host.noop(f"Docker version: {observed}; nothing changed on the host since preflight read it")
            return
    yield from wait_until._inner(check=check, description="Docker version", timeout_s=20, interval_s=2)


def pre_record_paths(data) -> list[str]:
    """The files a stack running before the first release record reads that this run
    overwrites: the env files we write, and the compose files `docker compose up -d` reads
    by default in <dir>/src (a stack started by hand in the checkout: the tree sync puts
    the checkout's copy over an edited one)."""
    base, compose_file = data.ingestor_dir, data.ingestor_compose_file
    stem, _, ext = compose_file.rpartition(".")
    compose = [f"{base}/src/{compose_file}", f"{base}/src/{stem}.override.{ext}"]
    return [f"{base}/src/{path}" for path in data.ingestor_env_files or {}] + [f"{base}/env/compose.env"] + compose


@operation()
def keep_pre_record_files(paths: list[str], records: list[str]):
    """No release record yet (a stack started by hand in <dir>/src, or by our deploy from
    before records): keep the files it runs with as `<file>.previous` before this run
    writes new ones (before the tree sync; `*.previous` is excluded from it).
    bin/ingestor-release records those as the previous release, so the first release's
    rollback puts them back; a healthy release removes them. Once: an earlier copy is
    never overwritten (it is older than this run's files)."""
    if any(host.get_fact(File, path=record) for record in records):
        host.noop("a release record exists: it holds the files to roll back to")
        return
    kept = [p for p in paths if host.get_fact(File, path=p) and not host.get_fact(File, path=p + ".previous")]
    if not kept:
        host.noop("no files to keep (none yet, or kept by an earlier run)")
        return
    for path in kept:
        yield StringCommand("cp", "-p", QuoteString(path), QuoteString(path + ".previous"))


@deploy("Layout, checkout and env files")
def layout(data, values, tree: Tree):
    base = data.ingestor_dir
    # a release an earlier apply left running reads src/, compose/ and env/: let it end first
    wait_for_step(name=f"{RELEASE_UNIT}.service: wait for an unfinished release", unit=RELEASE_UNIT)
    for path, mode in ((base, "755"), (f"{base}/bin", "755"), (f"{base}/compose", "755"), (f"{base}/env", "700"),
                       (data.ingestor_backup_dir, "700")):
        files.directory(name=path, path=path, user="root", group="root", mode=mode)
    release_records_installed()  # the records library bin/ingestor-release imports
    files.put(name=f"{base}/bin/ingestor-release", src=StringIO(RELEASE_SCRIPT), dest=f"{base}/bin/ingestor-release",
              user="root", group="root", mode="755")
    keep_pre_record_files(name="Env and compose files the running stack reads, kept before the first release record",
                          paths=pre_record_paths(data),
                          records=[f"{base}/{STACK}/release.json", f"{base}/{LEGACY_RECORD}"])
    tree_sync(name=f"Checkout -> {base}/src ({len(tree.files)} files, one tar when changed)", tree=tree,
              dest=f"{base}/src")
    written = [secret_file(name=f"{base}/src/{path} (from its template; secrets not shown)",
                           dest=f"{base}/src/{path}", content=HiddenValue(text))
               for path, text in env_files(data, values).items()]
    written.append(secret_file(name=f"{base}/env/compose.env (secrets not shown)", dest=f"{base}/env/compose.env",
                               content=HiddenValue(compose_env(data, values))))
    return written


def secret_values(data) -> dict[str, HiddenValue]:
    values = secrets.get(list(data.required_secrets))
    loaded = secrets.load()
    for name in data.ingestor_optional_secrets or []:
        values[name] = HiddenValue(loaded.get(name) or "")
    return values


def release_series(data) -> list[releases.Series]:
    """`make releases DEPLOY=ingestor` / `make rollback DEPLOY=ingestor [TO=id]`: the stack's
    releases, kept by bin/ingestor-release in releases.py's layout under ingestor_dir."""
    return [releases.Series("ha-ingestor", data.ingestor_dir, (STACK,))]


def rollback(data, target: dict) -> None:
    base = data.ingestor_dir
    ingestor_rolled_back(name=f"ha-ingestor rolled back to release {target['id']}", plan_path=f"{base}/release.json",
                         script=f"{base}/bin/ingestor-release", target=target,
                         timeout_s=int(data.ingestor_release_timeout_s or 7200))


def main(data):
    check_config(data)
    try:
        handled = releases.release_action(data.get("release_action"), release_series(data), data.get("release_to"),
                                          lambda _, target: rollback(data, target))
    except ConfigError as exc:
        raise ConfigError(f"ingestor {exc}") from None
    if handled:
        return
    values = secret_values(data)
    text, outline = theirs(data)
    checked_preflight(data, values)
    docker_host(hold_restart_for=(RELEASE_UNIT,))  # never restart dockerd under a running release
    docker_version_gate(data)
    tree = source_tree(data)
    env_ops = layout(data, values, tree)
    digests = source_digests(data, tree)
    head = alembic_head(source_dir(data) / data.ingestor_alembic_dir / "alembic" / "versions")
    plan = release_plan(data, digests, head, outline, service_bases(data))
    base = data.ingestor_dir
    plan_path = f"{base}/release.json"
    files.put(name=plan_path, src=StringIO(json.dumps(plan, indent=1, sort_keys=True) + "\n"), dest=plan_path,
              user="root", group="root", mode="644")
    legacy_record_adopted(name=f"Release record of the earlier layout ({base}/live) adopted as a kept release",
                          base=base, script=f"{base}/bin/ingestor-release", plan_path=plan_path)
    wanted = dict(zip(plan["compose_files"], (text, override(data, outline, digests))))
    ingestor_release(name=f"Release ha-ingestor ({len(plan['services'])} managed services, only when changed)",
                     plan=plan, wanted=wanted, script=f"{base}/bin/ingestor-release", plan_path=plan_path,
                     env_ops=env_ops)
    checked = [s for s, spec in plan["services"].items() if spec["health_url"]]
    timeout = float(data.ingestor_health_timeout_s)
    interval = float(data.get("health_interval_s") or 2)
    ports = sorted(spec["port"] for spec in data.ingestor_services.values() if spec.get("port"))
    # one gate, so one poll reads every health URL and the sockets (facts/prefetch.py: one command)
    wait_until(name=f"Health JSON of every managed service as the plan expects; published ports on "
                    f"{data.ingestor_bind_address} only", check=stack_check(plan, checked, ports),
               description="ha-ingestor /health and published ports", timeout_s=max(timeout, 10), interval_s=interval)
    if data.ingestor_discovery_gate:
        m = plan["migrate"]["db"]
        wait_until(name="Devices and entities in SQLite (ingestor_discovery_gate)",
                   check=devices_check(m["volume"], m["file"]), description="discovery",
                   timeout_s=float(data.ingestor_discovery_timeout_s), interval_s=interval)


# (`ctx_host.isset()`: unit tests import this module's helpers outside a pyinfra run.)
if ctx_host.isset() and "ingestor" in host.groups:
    deploy_lock.guarded("ingestor", main, host.data)  # one run at a time on this host, and its record
