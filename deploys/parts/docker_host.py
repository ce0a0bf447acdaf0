"""Docker host: the engine, its daemon config (log rotation) and a compose CLI (v2 or v1).

Reusable by every system that runs containers (archon, ingestor, hivesync):

    from deploys.parts.docker_host import docker_host
    docker_host(hold_restart_for=("archon-migrate",))

A host that already runs Docker keeps its engine: whichever of docker-ce (Docker's
repository), docker.io (Debian/Ubuntu), moby-engine is installed (facts: `DockerEngine`)
stays, and apt is not asked to install the other one (their packages conflict: apt would
swap the engine under the running containers). Packages are installed only where no engine
is present; a missing compose CLI is added for the engine found, without recommends.

daemon.json is merged, not replaced: the keys we manage (log driver + rotation,
live-restore, `docker_daemon_extra`) are set, every other key the operator wrote stays.
dockerd re-reads a change only when one is needed: keys dockerd reloads on SIGHUP
(`RELOADABLE`, moby daemon/reload.go: debug, labels, live-restore, registry mirrors ...)
get `systemctl reload docker`, any other changed key a restart. A restart waits while a
unit in `hold_restart_for` runs (e.g. archon's migration, itself a transient unit that
stops and starts containers), so dockerd never restarts in the middle of one.

Knobs (host data; defaults below, documented in group_data/docker_host.py):

- `docker_package_source`: "distro" (Debian/Ubuntu's own `docker.io` + compose package,
  no third-party repository) or "docker" (Docker's apt repository: docker-ce, containerd,
  the compose v2 plugin). Only used where no engine is installed yet.
- `docker_packages`: engine packages for "distro" (default `["docker.io"]`);
  `docker_compose_packages`: distribution id -> compose packages for "distro" (Debian 12
  has only the v1 `docker-compose`; Ubuntu has the v2 `docker-compose-v2`).
- `docker_repo_url`, `docker_repo_packages`: Docker's repository and its packages.
- `docker_log_max_size`, `docker_log_max_file`: json-file log rotation for every container
  (new containers: dockerd applies log options when a container is created).
- `docker_live_restore`: keep containers running while dockerd restarts (turned on by a
  reload first, so a restart in the same run already keeps them).
- `docker_daemon_extra`: more daemon.json keys we manage (e.g. {"default-address-pools": [...]}).
- `docker_compose_cli`: force "docker compose" or "docker-compose" (default: detected by
  `facts.compose.ComposeCli`, v2 preferred).
"""

from __future__ import annotations

import json
import re
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, deploy, operation
from pyinfra.context import state
from pyinfra.facts.server import Arch, LinuxDistribution
from pyinfra.operations import apt, files, systemd

from deploys.errors import ConfigError
from deploys.parts.compose import detected_cli, fail_command
from facts.compose import ComposeCli
from facts.docker_host import DaemonJson, DockerEngine

DAEMON_JSON = "/etc/docker/daemon.json"
KEYRING = "/etc/apt/keyrings/docker.asc"

DEFAULTS = {
    "docker_package_source": "distro",
    "docker_packages": ["docker.io"],
    "docker_compose_packages": {"debian": ["docker-compose"], "ubuntu": ["docker-compose-v2"]},
    "docker_repo_url": "https://download.docker.com/linux",
    "docker_repo_packages": ["docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"],
    "docker_log_max_size": "10m",
    "docker_log_max_file": 3,
    "docker_live_restore": True,
    "docker_daemon_extra": {},
}
# daemon.json keys dockerd re-reads on SIGHUP (moby daemon/reload.go); any other needs a restart
RELOADABLE = frozenset({
    "debug", "labels", "live-restore", "max-concurrent-downloads", "max-concurrent-uploads",
    "max-download-attempts", "shutdown-timeout", "insecure-registries", "registry-mirrors",
    "runtimes", "default-runtime",
})
# compose for an engine that is already there (docker-ce: Docker's repository's plugin)
COMPOSE_FOR_ENGINE = {"docker-ce": ["docker-compose-plugin"]}
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf"}


def knob(name: str):
    value = host.data.get(name)
    return DEFAULTS[name] if value is None else value


def daemon_config(max_size: str, max_file: int, live_restore: bool, extra: dict | None = None) -> dict:
    """daemon.json: json-file logs rotated at `max_size` x `max_file` for every container."""
    if not str(max_size)[:-1].isdigit() or str(max_size)[-1] not in "kmg":
        raise ConfigError(f"docker_log_max_size {max_size!r} must look like 10m, 512k or 1g")
    if int(max_file) < 1:
        raise ConfigError(f"docker_log_max_file {max_file!r} must be at least 1")
    config = {
        "log-driver": "json-file",
        "log-opts": {"max-size": str(max_size), "max-file": str(int(max_file))},
        "live-restore": bool(live_restore),
    }
    config.update(extra or {})
    return config


def merge_daemon_config(current: dict, managed: dict) -> dict:
    """`current` (the host's daemon.json) with the keys we manage set. Every other key stays.
    log-opts are merged key by key while the log driver stays the same (an operator's
    extra json-file option is kept); a new driver gets only our options (another driver's
    options would make dockerd refuse to start)."""
    merged = dict(current)
    for key, value in managed.items():
        if key == "log-opts" and isinstance(value, dict) and isinstance(current.get(key), dict) \
                and current.get("log-driver", "json-file") == managed.get("log-driver", current.get("log-driver")):
            merged[key] = {**current[key], **value}
        else:
            merged[key] = value
    return merged


def changed_keys(current: dict, merged: dict) -> set[str]:
    return {k for k in set(current) | set(merged) if current.get(k) != merged.get(k)}


def daemon_action(changed: set[str]) -> str:
    """"none", "reload" (SIGHUP is enough) or "restart"."""
    if not changed:
        return "none"
    return "reload" if changed <= RELOADABLE else "restart"


def render_daemon_json(config: dict) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def distro_id() -> tuple[str, str]:
    """("ubuntu", "noble") / ("debian", "bookworm") of the host."""
    distro = host.get_fact(LinuxDistribution) or {}
    meta = distro.get("release_meta") or {}
    os_id = str(meta.get("ID", distro.get("name") or "")).lower()
    return os_id, str(meta.get("VERSION_CODENAME", "")).strip('"')


def packages_for(source: str, os_id: str) -> list[str]:
    if source == "distro":
        compose = knob("docker_compose_packages").get(os_id)
        if compose is None:
            raise ConfigError(f"docker_compose_packages has no entry for {os_id!r}")
        return [*knob("docker_packages"), *compose]
    if source == "docker":
        return list(knob("docker_repo_packages"))
    raise ConfigError(f"docker_package_source {source!r} is not 'distro' or 'docker'")


@operation(is_idempotent=True)
def compose_cli_available():
    """Fail (at execution) unless the host has `docker compose` or `docker-compose`."""
    if not state.is_executing:
        host.noop("compose CLI: checked when the deploy runs")
        return
    cli = detected_cli()
    if cli is None:
        yield fail_command(f"no compose CLI on {host.name}: install docker-compose-v2 / docker-compose-plugin "
                    "(v2) or docker-compose (v1), see docker_compose_packages")
        return
    host.noop(f"compose CLI: {cli}")


@operation(is_idempotent=True)
def engine_kept(engine: dict, source: str):
    """Report the engine found (nothing to do: it is kept as it is)."""
    what = f"{engine['package']} {engine['version']}" if engine.get("package") else "dockerd (not from apt)"
    other = "" if _source_of(engine) in (None, source) else f"; docker_package_source={source!r} is not applied"
    host.noop(f"Docker engine already installed: {what} (kept, never swapped{other})")
    return
    yield  # (a generator)


def _source_of(engine: dict) -> str | None:
    return {"docker-ce": "docker", "docker.io": "distro"}.get(engine.get("package") or "")


def _wait_for_units(units) -> list:
    """Shell: wait while any of `units` runs (a restart must not cut through them)."""
    parts: list = []
    for unit in units:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$", str(unit)):
            raise ConfigError(f"hold_restart_for: {unit!r} is not a unit name")
        quoted = QuoteString(f"{unit}.service")
        parts += ["while systemctl is-active -q", quoted, "; do echo", QuoteString(f"dockerd restart waits for {unit}"),
                  ">&2; sleep 5; done;"]
    return parts


DAEMON_BACKUP_DIR = "/var/backups/infra-docker"
PREVIOUS_DAEMON_JSON = f"{DAEMON_BACKUP_DIR}/daemon.json.previous"


def backup_daemon_json() -> StringCommand:
    """The host's daemon.json kept before we rewrite it: `.previous` (what a failed
    restart puts back) and a timestamped copy (never pruned: it is small)."""
    return StringCommand("install -d -m 700", DAEMON_BACKUP_DIR, "&& cp -p", DAEMON_JSON, PREVIOUS_DAEMON_JSON,
                         "&& cp -p", DAEMON_JSON, f'"{DAEMON_BACKUP_DIR}/daemon.json.$(date +%Y%m%dT%H%M%S)"')


def restart_dockerd(service: str, hold_restart_for=(), live_restore: bool = False) -> StringCommand:
    """Restart a running dockerd after the held units end. With live-restore wanted, a
    reload first turns it on (polled until dockerd reports it, up to 10 s), so the
    containers outlive the restart. A dockerd that will not start with the new file gets
    the previous one back and is started again; the operation still fails, saying so."""
    svc = QuoteString(service)
    reload_first = ["systemctl reload", svc, "; for i in 1 2 3 4 5 6 7 8 9 10; do",
                    "[ \"$(docker info -f '{{.LiveRestoreEnabled}}' 2>/dev/null)\" = true ] && break; sleep 1; done;"
                    ] if live_restore else []
    restore = ["echo", QuoteString(f"dockerd did not start with the new {DAEMON_JSON}: the previous one is put back"),
               ">&2; [ ! -f", PREVIOUS_DAEMON_JSON, "] || cp -p", PREVIOUS_DAEMON_JSON, DAEMON_JSON, ";",
               "systemctl restart", svc, "; false"]
    return StringCommand("if systemctl is-active -q", svc, "; then", *_wait_for_units(hold_restart_for),
                         *reload_first, "systemctl restart", svc, "||", "{", *restore, "; }", "; fi")


@operation()
def daemon_json(managed: dict, hold_restart_for=(), service: str = "docker.service"):
    """daemon.json = the host's own keys + `managed` (see `merge_daemon_config`); dockerd
    reloads or restarts only for a changed key that needs it, a restart after the units in
    `hold_restart_for` have ended. A daemon.json that is not valid JSON is left as it is
    and fails the operation (dockerd would not start with it either)."""
    current = host.get_fact(DaemonJson, path=DAEMON_JSON)
    if current["error"]:
        yield fail_command(f"{DAEMON_JSON} on {host.name} is {current['error']}: fix it by hand (left unchanged)")
        return
    merged = merge_daemon_config(current["config"], managed)
    changed = changed_keys(current["config"], merged)
    action = daemon_action(changed)
    kept = sorted(set(merged) - set(managed))
    if action == "none" and current["exists"]:
        host.noop(f"{DAEMON_JSON}: our keys set" + (f", operator keys kept: {', '.join(kept)}" if kept else ""))
        return
    host.log(f"{DAEMON_JSON}: {', '.join(sorted(changed)) or 'created'} changed -> dockerd {action}"
             + (f" (operator keys kept: {', '.join(kept)})" if kept else ""))
    yield StringCommand("mkdir", "-p", "/etc/docker")
    if current["exists"]:
        yield backup_daemon_json()
    yield FileUploadCommand(BytesIO(render_daemon_json(merged).encode()), DAEMON_JSON)
    yield StringCommand("chmod", "644", DAEMON_JSON)
    svc = QuoteString(service)
    if action == "reload":
        yield StringCommand("if systemctl is-active -q", svc, "; then systemctl reload", svc, "; fi")
    elif action == "restart":
        yield restart_dockerd(service, hold_restart_for, live_restore=bool(merged.get("live-restore")))


@deploy("Docker host")
def docker_host(hold_restart_for=()):
    """Engine + compose (kept where present), daemon.json merged, dockerd running.
    `hold_restart_for`: systemd units (without .service) a dockerd restart waits for."""
    source = knob("docker_package_source")
    os_id, codename = distro_id()
    engine = host.get_fact(DockerEngine)
    if engine["installed"] and not engine.get("unit"):
        what = engine.get("package") or "a dockerd on PATH"
        raise ConfigError(f"{host.name}: a Docker engine is installed ({what}) but there is no docker.service "
                          "(a snap or a hand-started dockerd?); this part manages docker.service and "
                          f"{DAEMON_JSON}: install Docker from apt (docker.io or docker-ce), or remove that engine")
    if engine["installed"]:
        engine_kept(name="Docker engine (kept as installed)", engine=engine, source=source)
        if host.get_fact(ComposeCli) is None and not host.data.get("docker_compose_cli"):
            compose = COMPOSE_FOR_ENGINE.get(engine.get("package") or "")
            if compose is None:
                compose = knob("docker_compose_packages").get(os_id)
            if not compose:
                raise ConfigError(f"no compose CLI on {host.name} and no compose package known for {os_id!r}")
            apt.packages(name=f"Compose for the installed engine ({', '.join(compose)})", packages=compose,
                         update=True, cache_time=3600, extra_install_args="--no-install-recommends")
    else:
        install_engine(source, os_id, codename)
    files.directory(name="/etc/docker", path="/etc/docker", user="root", group="root", mode="755")
    config = daemon_config(knob("docker_log_max_size"), knob("docker_log_max_file"),
                           knob("docker_live_restore"), knob("docker_daemon_extra"))
    daemon_json(
        name=f"{DAEMON_JSON} merged (log rotation {config['log-opts']['max-size']} x {config['log-opts']['max-file']})",
        managed=config, hold_restart_for=tuple(hold_restart_for),
    )
    systemd.service(name="dockerd enabled and running", service="docker.service", running=True, enabled=True)
    compose_cli_available(name="Compose CLI available (v2 or v1)")


def install_engine(source: str, os_id: str, codename: str):
    """A host without Docker: the engine + compose from the configured source."""
    packages = packages_for(source, os_id)
    if source == "docker":
        if os_id not in ("debian", "ubuntu") or not codename:
            raise ConfigError(f"Docker's apt repository needs Debian or Ubuntu, not {os_id!r} {codename!r}")
        arch = _ARCH.get(str(host.get_fact(Arch)), "amd64")
        apt.packages(name="Packages for Docker's apt repository", packages=["ca-certificates", "curl"],
                     update=True, cache_time=3600)
        files.directory(name="/etc/apt/keyrings", path="/etc/apt/keyrings", mode="755")
        repo_url = f"{knob('docker_repo_url').rstrip('/')}/{os_id}"
        files.download(name="Docker's apt signing key", src=f"{repo_url}/gpg", dest=KEYRING, mode="644")
        repo = apt.repo(
            name="Docker's apt repository",
            src=f"deb [arch={arch} signed-by={KEYRING}] {repo_url} {codename} stable",
            filename="docker",
        )
        apt.update(name="apt update (Docker's repository added)", _if=repo.did_change)
    apt.packages(name=f"Docker engine + compose ({source})", packages=packages, update=True, cache_time=3600)
