"""Docker host: the engine, its daemon config (log rotation) and a compose CLI (v2 or v1).

Reusable by every system that runs containers (archon, ingestor, hivesync):

    from deploys.parts.docker_host import docker_host
    docker_host()

Knobs (host data; defaults below, documented in group_data/docker_host.py):

- `docker_package_source`: "distro" (Debian/Ubuntu's own `docker.io` + compose package,
  no third-party repository) or "docker" (Docker's apt repository: docker-ce, containerd,
  the compose v2 plugin).
- `docker_packages`: engine packages for "distro" (default `["docker.io"]`);
  `docker_compose_packages`: distribution id -> compose packages for "distro" (Debian 12
  has only the v1 `docker-compose`; Ubuntu has the v2 `docker-compose-v2`).
- `docker_repo_url`, `docker_repo_packages`: Docker's repository and its packages.
- `docker_log_max_size`, `docker_log_max_file`: json-file log rotation for every container.
- `docker_live_restore`: keep containers running while dockerd restarts (a daemon.json
  change restarts dockerd; on the very first change the old daemon runs without it, so
  containers restart once, by their restart policy).
- `docker_daemon_extra`: more daemon.json keys (e.g. {"default-address-pools": [...]}).
- `docker_compose_cli`: force "docker compose" or "docker-compose" (default: detected by
  `facts.compose.ComposeCli`, v2 preferred).
"""

from __future__ import annotations

import json
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.context import state
from pyinfra.facts.server import Arch, LinuxDistribution
from pyinfra.operations import apt, files, systemd

from deploys.errors import ConfigError
from deploys.parts.compose import detected_cli, fail_command

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


@deploy("Docker host")
def docker_host():
    """Engine + compose from the configured source, daemon.json, dockerd running."""
    source = knob("docker_package_source")
    os_id, codename = distro_id()
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
    files.directory(name="/etc/docker", path="/etc/docker", user="root", group="root", mode="755")
    config = daemon_config(knob("docker_log_max_size"), knob("docker_log_max_file"),
                           knob("docker_live_restore"), knob("docker_daemon_extra"))
    daemon = files.put(
        name=f"{DAEMON_JSON} (log rotation {config['log-opts']['max-size']} x {config['log-opts']['max-file']})",
        src=StringIO(render_daemon_json(config)), dest=DAEMON_JSON, user="root", group="root", mode="644",
    )
    systemd.service(name="Restart dockerd (daemon.json changed)", service="docker.service", running=True,
                    restarted=True, _if=daemon.did_change)
    systemd.service(name="dockerd enabled and running", service="docker.service", running=True, enabled=True)
    compose_cli_available(name="Compose CLI available (v2 or v1)")
