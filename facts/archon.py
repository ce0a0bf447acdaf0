"""
Facts for deploys/archon.py: the old (pre-consolidation) layout, and the state of the
stack's env file (names only: secret values never leave the host).

- ``ArchonOldLayout(...)`` -> what is left of the old layout on the host: supabase-CLI
  containers (name -> state), the old networks and volumes, the rebind unit, and whether
  this deploy already migrated the host (marker file). Helper ``migration_action``.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase
from typing_extensions import override


def _names(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


class ArchonOldLayout(FactBase[dict[str, Any]]):
    """
    The old layout's parts still present (all empty/False on a fresh or migrated host):

    .. code:: python

        {"containers": {"supabase_db_supabase": "running", ...},   # name prefix match
         "networks": ["supabase_network_archon", ...],            # of the names asked
         "volumes": ["supabase_db_supabase", ...],                # name prefix match
         "rebind_unit": True,                                      # unit file exists
         "migrated": False}                                        # marker file exists

    Empty result (no docker yet) is the default: nothing old to migrate.
    """

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "docker"

    @override
    def command(self, container_prefix: str, networks: list[str], volume_prefix: str,
                unit_path: str, marker: str) -> str:
        prefix = shlex.quote(container_prefix)
        vprefix = shlex.quote(volume_prefix)
        # the daemon must answer (a failure fails the fact instead of claiming "no old layout")
        return (
            "c=$(docker ps -a --format '{{.Names}} {{.State}}') || exit 1; "
            "n=$(docker network ls --format '{{.Name}}') || exit 1; "
            "v=$(docker volume ls --format '{{.Name}}') || exit 1; "
            "echo \"$c\" | while read -r name st; do "
            f"case \"$name\" in {prefix}*) echo \"container $name $st\";; esac; done; "
            "echo \"$n\" | while read -r name; do "
            f"for w in {_names(networks) or '_'}; do if [ \"$name\" = \"$w\" ]; then echo \"network $name\"; fi; done; done; "
            "echo \"$v\" | while read -r name; do "
            f"case \"$name\" in {vprefix}*) echo \"volume $name\";; esac; done; "
            f"if [ -e {shlex.quote(unit_path)} ]; then echo rebind_unit; fi; "
            f"if [ -e {shlex.quote(marker)} ]; then echo migrated; fi; true"
        )

    @staticmethod
    @override
    def default() -> dict[str, Any]:
        return {"containers": {}, "networks": [], "volumes": [], "rebind_unit": False, "migrated": False}

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_old_layout(output)


def parse_old_layout(output: list[str]) -> dict[str, Any]:
    result = ArchonOldLayout.default()
    for line in output:
        words = line.split()
        if not words:
            continue
        if words[0] == "container" and len(words) >= 2:
            result["containers"][words[1]] = words[2] if len(words) > 2 else "unknown"
        elif words[0] == "network" and len(words) == 2:
            result["networks"].append(words[1])
        elif words[0] == "volume" and len(words) == 2:
            result["volumes"].append(words[1])
        elif words[0] == "rebind_unit":
            result["rebind_unit"] = True
        elif words[0] == "migrated":
            result["migrated"] = True
    result["networks"] = sorted(set(result["networks"]))
    result["volumes"] = sorted(set(result["volumes"]))
    return result


def old_parts(layout: dict[str, Any]) -> list[str]:
    """Human list of what is left of the old layout (empty: nothing)."""
    parts = [f"container {c}" for c in sorted(layout.get("containers", {}))]
    parts += [f"network {n}" for n in layout.get("networks", [])]
    parts += [f"volume {v}" for v in layout.get("volumes", [])]
    if layout.get("rebind_unit"):
        parts.append("rebind unit")
    return parts


def migration_action(layout: dict[str, Any], db_container: str, db_volume: str) -> tuple[str, str]:
    """("none" | "migrate" | "cleanup" | "blocked", why).

    - nothing old left: "none";
    - already migrated (marker) but old parts left (a cleanup that did not finish):
      "cleanup";
    - the old database container exists: "migrate";
    - old parts but no old database container: "blocked" - e.g. `supabase stop` removed
      the containers and the data sits in a volume only. Nothing is changed then: the
      operator starts the old stack (`supabase start`) and runs the deploy again.
    """
    parts = old_parts(layout)
    if not parts:
        return "none", "no old layout"
    if layout.get("migrated"):
        return "cleanup", "migrated already; left over: " + ", ".join(parts)
    if db_container in layout.get("containers", {}):
        return "migrate", "old layout: " + ", ".join(parts)
    if db_volume in layout.get("volumes", []):
        return "blocked", (
            f"old layout without its database container {db_container} (volume {db_volume} holds the data): "
            "start the old stack (`supabase start` in /opt/archon/supabase) and run the deploy again"
        )
    return "cleanup", "old parts without data: " + ", ".join(parts)


class ArchonSchema(FactBase[str]):
    """Whether Archon's schema is in the stack's database: "present" (archon_settings
    exists), "absent" (a database without it), "unknown" (no such container, or the database
    does not answer). Asked as `admin_user` over 127.0.0.1 inside the container."""

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "docker"

    @override
    def command(self, container: str, admin_user: str, db: str) -> str:
        sql = "SELECT to_regclass('public.archon_settings') IS NOT NULL"
        return (
            f"out=$(docker exec {shlex.quote(container)} psql -h 127.0.0.1 -U {shlex.quote(admin_user)} "
            f"-d {shlex.quote(db)} -XAtq -c {shlex.quote(sql)} 2>/dev/null) || out=unknown; echo \"schema $out\""
        )

    @staticmethod
    @override
    def default() -> str:
        return "unknown"

    @override
    def process(self, output: list[str]) -> str:
        return parse_schema(output)


def parse_schema(output: list[str]) -> str:
    for line in output:
        words = line.split()
        if len(words) == 2 and words[0] == "schema":
            return {"t": "present", "f": "absent"}.get(words[1], "unknown")
    return "unknown"


class DockerNetworkSubnets(FactBase[dict[str, list[str]]]):
    """Every Docker network's subnets, ``{"name": ["172.18.0.0/16", ...]}`` (from
    `docker network inspect`); {} without docker. A header line tells "no networks" from
    a daemon that does not answer (that fails the fact)."""

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "docker"

    @override
    def command(self) -> str:
        return (
            "ids=$(docker network ls -q) || exit 1; echo networks; "
            "[ -z \"$ids\" ] || docker network inspect --format "
            "'{{.Name}} {{range .IPAM.Config}}{{.Subnet}} {{end}}' $ids"
        )

    @staticmethod
    @override
    def default() -> dict[str, list[str]]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, list[str]]:
        return parse_network_subnets(output)


def parse_network_subnets(output: list[str]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for line in output:
        words = line.split()
        if not words or words == ["networks"]:
            continue
        result[words[0]] = words[1:]
    return result


def overlapping_networks(subnets: dict[str, list[str]], wanted: str, own: str) -> list[str]:
    """Networks other than `own` whose subnets overlap `wanted` ("name (subnet)")."""
    import ipaddress

    target = ipaddress.ip_network(wanted)
    found = []
    for name, nets in sorted(subnets.items()):
        if name == own:
            continue
        for net in nets:
            try:
                other = ipaddress.ip_network(net, strict=False)
            except ValueError:
                continue
            if other.version == target.version and other.overlaps(target):
                found.append(f"{name} ({net})")
    return found
