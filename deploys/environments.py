"""Which hosts exist in which environment, and which of them a run targets.

`inventory.py` is a thin shell over this module so the logic can be unit-tested.
The environment is chosen explicitly with `DEPLOY_ENV`; the default is `test` (the
disposable hosts), so a bare `pyinfra inventory.py deploys/x.py` never touches
production.
"""

from __future__ import annotations

import json
import os
import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path

from deploys.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
GROUP_DATA = REPO_ROOT / "group_data"
ENVIRONMENTS = ("prod", "staging", "test")
DEFAULT_ENV = "test"

# System group -> kind groups its hosts belong to by default. A sixth system needs no
# entry here: its hosts name their groups in the inventory data.
KINDS = ("native_vm", "docker_host", "linode", "local")

_HOST_NAME = re.compile(r"^(@local|@vagrant/[\w.-]+|@docker/[\w.:/-]+|[A-Za-z0-9][A-Za-z0-9.-]*)$")
_GROUP_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class HostSpec:
    """One inventory host: its pyinfra name, groups and host-level data."""

    name: str
    groups: list[str]
    data: dict = field(default_factory=dict)


def selected_env(environ=os.environ) -> str:
    env = environ.get("DEPLOY_ENV", DEFAULT_ENV).strip() or DEFAULT_ENV
    if env not in ENVIRONMENTS:
        raise ConfigError(f"DEPLOY_ENV={env!r} is not one of {', '.join(ENVIRONMENTS)}")
    return env


def _env(environ, key: str, default: str) -> str:
    return environ.get(key, "").strip() or default


def prod_hosts(environ=os.environ) -> list[HostSpec]:
    """Production: the real servers of the five plans. Override addresses with env vars."""
    return [
        HostSpec(
            _env(environ, "MUSIC_HOST", "dev.jasonhollis.com"),
            ["native_vm", "music"],
            {"ssh_user": _env(environ, "MUSIC_SSH_USER", "jason"), "_sudo": True},
        ),
        HostSpec(
            _env(environ, "ARCHON_HOST", "archon.nexorithm.io"),
            ["docker_host", "archon"],
            {"ssh_user": _env(environ, "ARCHON_SSH_USER", "root")},
        ),
        HostSpec(
            _env(environ, "INGESTOR_HOST", "ha-ingestor.local"),
            ["docker_host", "ingestor"],
            {"ssh_user": _env(environ, "INGESTOR_SSH_USER", "root")},
        ),
        HostSpec(
            _env(environ, "HIVESYNC_HOST", "hivesync.linode.invalid"),
            ["linode", "docker_host", "hivesync"],
            {"ssh_user": _env(environ, "HIVESYNC_SSH_USER", "root"), "hivesync_role": "server"},
        ),
        # The operator's own machine: YouTube assistant production and HiveSync's
        # Cloudflare Workers (wrangler) run from here, as the operator, without root.
        HostSpec("@local", ["local", "youtube", "hivesync"], {"hivesync_role": "workstation"}),
    ]


def staging_hosts(environ=os.environ) -> list[HostSpec]:
    """Staging: the Vagrant VMs of the repository's Vagrantfile (`vagrant up` first)."""
    return [
        HostSpec("@vagrant/music", ["native_vm", "music"], {"_sudo": True}),
        HostSpec("@vagrant/archon", ["docker_host", "archon"], {"_sudo": True}),
        HostSpec("@vagrant/ingestor", ["docker_host", "ingestor"], {"_sudo": True}),
        HostSpec(
            "@vagrant/hivesync",
            ["linode", "docker_host", "hivesync"],
            {"_sudo": True, "hivesync_role": "server"},
        ),
    ]


def test_inventory_path(environ=os.environ) -> Path:
    """`$INFRA_TEST_INVENTORY`, else `$INFRA_HOSTS_DIR/inventory.json` (set by the harness)."""
    hosts_dir = _env(environ, "INFRA_HOSTS_DIR", str(REPO_ROOT / ".hosts"))
    return Path(_env(environ, "INFRA_TEST_INVENTORY", str(Path(hosts_dir) / "inventory.json")))


def test_hosts(environ=os.environ) -> list[HostSpec]:
    """Disposable hosts written by the test harness (`make hosts-up`)."""
    path = test_inventory_path(environ)
    if not path.exists():
        raise ConfigError(
            f"DEPLOY_ENV=test but {path} does not exist: start disposable hosts with "
            "`make hosts-up` (or choose DEPLOY_ENV=prod|staging)"
        )
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    helpers = {
        "test_dns_server": (doc.get("dns") or {}).get("address"),
        "acme_directory": (doc.get("acme") or {}).get("directory"),
        "acme_ca_bundle": (doc.get("acme") or {}).get("ca_bundle"),
    }
    # The harness records each host's key: check it. Without that file, accept any key
    # (a disposable host gets a new key every boot).
    known_hosts = path.parent / "known_hosts"
    host_keys = (
        {"ssh_known_hosts_file": str(known_hosts), "ssh_strict_host_key_checking": "yes"}
        if known_hosts.exists()
        else {"ssh_known_hosts_file": "/dev/null", "ssh_strict_host_key_checking": "no"}
    )
    hosts = []
    for entry in doc.get("hosts", []):
        data = {
            "ssh_hostname": entry["ssh_hostname"],
            "ssh_port": int(entry["ssh_port"]),
            "ssh_user": entry.get("ssh_user", "root"),
            "ssh_key": entry["ssh_key"],
            **host_keys,
            "test_address": entry.get("address"),
            **{k: v for k, v in helpers.items() if v},
            **entry.get("data", {}),
        }
        hosts.append(HostSpec(entry["name"], list(entry.get("groups", [])), data))
    return hosts


def hosts_for(env: str, environ=os.environ) -> list[HostSpec]:
    return {"prod": prod_hosts, "staging": staging_hosts, "test": test_hosts}[env](environ)


def requested_systems(argv: list[str], environ=os.environ) -> list[str]:
    """Systems named by deploy files on the command line (`deploys/music.py` -> music).

    `INFRA_SYSTEMS=a,b` overrides. An empty list means "no deploy named": keep all hosts.
    """
    if override := environ.get("INFRA_SYSTEMS", "").strip():
        return [s.strip() for s in override.split(",") if s.strip()]
    systems = []
    for arg in argv[1:]:
        path = Path(arg)
        if path.suffix == ".py" and path.parent.name == "deploys" and path.stem != "__init__":
            systems.append(path.stem)
    return systems


def validate(hosts: list[HostSpec], require_system: bool = True) -> None:
    """One clear message for every malformed host entry.

    `require_system=False` for disposable test hosts, which may be booted for the
    harness's own checks without any system group.
    """
    problems = []
    seen: dict[str, HostSpec] = {}
    for spec in hosts:
        if not isinstance(spec.name, str) or not _HOST_NAME.match(spec.name):
            problems.append(f"host name {spec.name!r} is not a hostname or @connector")
        bad_groups = [g for g in spec.groups if not _GROUP_NAME.match(str(g))]
        if bad_groups:
            problems.append(f"{spec.name}: invalid group names {bad_groups}")
        if require_system and not [g for g in spec.groups if g not in KINDS]:
            problems.append(f"{spec.name}: belongs to no system group (groups: {spec.groups})")
        port = spec.data.get("ssh_port")
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            problems.append(f"{spec.name}: ssh_port {port!r} is not a TCP port")
        if spec.name in seen and seen[spec.name].data != spec.data:
            problems.append(f"{spec.name}: defined twice with different data")
        seen[spec.name] = spec
    if problems:
        raise ConfigError("malformed inventory: " + "; ".join(problems))


def select(hosts: list[HostSpec], systems: list[str]) -> list[HostSpec]:
    """Only the hosts of the named systems, so a run never connects to unrelated servers."""
    if not systems:
        return hosts
    return [h for h in hosts if set(h.groups) & set(systems)]


def system_data(system: str) -> dict:
    """The pure-data group file of a system (for checks made before pyinfra loads it)."""
    path = GROUP_DATA / f"{system}.py"
    if not path.exists():
        return {}
    return {k: v for k, v in runpy.run_path(str(path)).items() if not k.startswith("_")}


def required_secrets(systems: list[str]) -> dict[str, list[str]]:
    return {s: list(system_data(s).get("required_secrets", [])) for s in systems}


def groups_in_precedence_order(hosts: list[HostSpec], env: str) -> dict[str, list]:
    """Group -> members, ordered so later groups win on conflicting data.

    pyinfra merges group data in the order groups are defined in the inventory file:
    kinds (most general) < systems < the environment (e.g. test overrides).
    """
    order = [*KINDS]
    for spec in hosts:
        order += [g for g in spec.groups if g not in order]
    groups: dict[str, list] = {}
    for group in order:
        members = [(h.name, h.data) for h in hosts if group in h.groups]
        if members:
            groups[group] = members
    groups[env] = [(h.name, h.data) for h in hosts]
    return groups
