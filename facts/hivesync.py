"""Facts of the HiveSync deploy: which image a container runs, how the backend manages
its schema (Alembic when its working directory has an alembic.ini, else create_all at
start-up, as upstream c5680a2 does), the database's tables, and whether the database
is at Alembic's head (asked inside the running backend)."""

from __future__ import annotations

import re
import shlex
from typing import Any

from pyinfra.api import FactBase
from typing_extensions import override

_REVISION = re.compile(r"^([0-9A-Za-z_]+)(?: \(.*\))?\s*$")
_SPLIT = "--- heads ---"


class ContainerImage(FactBase[dict[str, Any]]):
    """`{"running_id", "running_name", "wanted_id"}`: the image container `container`
    runs (None when there is no such container) and the local id of `image`."""

    @override
    def command(self, container: str, image: str) -> str:
        c, i = shlex.quote(container), shlex.quote(image)
        return (f"echo \"running $(docker inspect --format '{{{{.Image}}}} {{{{.Config.Image}}}}' {c} 2>/dev/null)\"; "
                f"echo \"wanted $(docker image inspect --format '{{{{.Id}}}}' {i} 2>/dev/null)\"")

    @staticmethod
    @override
    def default() -> dict[str, Any]:
        return {"running_id": None, "running_name": None, "wanted_id": None}

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        result = self.default()
        for line in output:
            kind, _, rest = line.partition(" ")
            words = rest.split()
            if kind == "running" and len(words) == 2:
                result["running_id"], result["running_name"] = words
            elif kind == "wanted" and words:
                result["wanted_id"] = words[0]
        return result


def parse_revisions(lines: list[str]) -> list[str]:
    """Revision ids from `alembic current` / `alembic heads` output (log lines ignored)."""
    found = []
    for line in lines:
        match = _REVISION.match(line.strip())
        if match and not line.startswith(("INFO", "WARN", "ERROR")):
            found.append(match.group(1))
    return found


def parse_alembic(output: list[str]) -> dict[str, Any]:
    split = output.index(_SPLIT) if _SPLIT in output else len(output)
    current, heads = parse_revisions(output[:split]), parse_revisions(output[split + 1:])
    return {"current": current, "heads": heads, "at_head": bool(heads) and sorted(current) == sorted(heads)}


class AlembicAtHead(FactBase[dict[str, Any]]):
    """`{"current", "heads", "at_head"}` from `alembic current` / `alembic heads` run in
    the backend container (its image carries alembic.ini and the migrations)."""

    @override
    def command(self, container: str, current: list[str], heads: list[str]) -> str:
        c = shlex.quote(container)
        run = lambda argv: f"docker exec {c} {' '.join(shlex.quote(a) for a in argv)} 2>/dev/null"  # noqa: E731
        return f"{run(current)}; echo '{_SPLIT}'; {run(heads)}; true"

    @staticmethod
    @override
    def default() -> dict[str, Any]:
        return {"current": [], "heads": [], "at_head": False}

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_alembic([line.rstrip() for line in output])


_SCHEMA_HEADER = "__hivesync_schema__"


def parse_schema(lines: list[str]) -> dict[str, Any]:
    """`{"alembic": bool | None, "tables": [...] | None}` (None: could not tell)."""
    result: dict[str, Any] = {"alembic": None, "tables": None}
    for line in lines:
        kind, _, rest = line.strip().partition(" ")
        if kind == "alembic_ini" and rest in ("yes", "no"):
            result["alembic"] = rest == "yes"
        elif kind == "tables" and rest.strip() != "?":
            result["tables"] = sorted(set(rest.split()))
    return result


class DatabaseSchema(FactBase[dict[str, Any]]):
    """Whether the backend container's working directory has `alembic_ini` (then it
    migrates with Alembic) and the public tables of the database (psql in `postgres`)."""

    @override
    def command(self, backend: str, postgres: str, user: str, db: str, alembic_ini: str) -> str:
        b, p = shlex.quote(backend), shlex.quote(postgres)
        sql = shlex.quote("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return (f"echo {_SCHEMA_HEADER}; "
                f"if docker exec {b} test -f {shlex.quote(alembic_ini)} 2>/dev/null; then echo 'alembic_ini yes'; "
                f"elif docker inspect {b} >/dev/null 2>&1; then echo 'alembic_ini no'; fi; "
                f"t=$(docker exec {p} psql -XAtq -U {shlex.quote(user)} -d {shlex.quote(db)} -c {sql} 2>/dev/null) "
                "&& echo tables $t || echo 'tables ?'")

    @staticmethod
    @override
    def default() -> dict[str, Any]:
        return {"alembic": None, "tables": None}

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_schema(output)


def missing_tables(required: list[str], present: list[str]) -> list[str]:
    return sorted(set(required) - set(present))


_LISTING = "__r2_bucket_list__"
_LISTING_FAILED = "__r2_bucket_list_failed__"
_BUCKET_LINE = re.compile(r"^name:\s+(\S+)\s*$")
_BUCKET_JSON = re.compile(r'"name"\s*:\s*"([^"]+)"')


def parse_r2_bucket_list(lines: list[str]) -> list[str] | None:
    """Bucket names from `wrangler r2 bucket list`: `name: x` lines (wrangler 3.x+) or
    the JSON array older releases printed. None when the command failed (not logged in,
    no network), so the caller can say so instead of creating a bucket that exists."""
    if any(line.startswith(_LISTING_FAILED) for line in lines):
        return None
    names = []
    for line in lines:
        if line.strip() == _LISTING:
            continue
        match = _BUCKET_LINE.match(line.strip())
        names += [match.group(1)] if match else _BUCKET_JSON.findall(line)
    return sorted(set(names))


class R2Buckets(FactBase[list[str] | None]):
    """The account's R2 bucket names as wrangler sees them (None: wrangler failed)."""

    @override
    def command(self, wrangler: str) -> str:
        # The header line: pyinfra answers default() (None: "failed") for empty output,
        # and an account without buckets prints nothing.
        return f"echo {_LISTING}; {shlex.quote(wrangler)} r2 bucket list 2>/dev/null || echo {_LISTING_FAILED} $?"

    @staticmethod
    @override
    def default() -> list[str] | None:
        return None

    @override
    def process(self, output: list[str]) -> list[str] | None:
        return parse_r2_bucket_list(output)


_DOCKER_HEADER = "--- docker server ---"


class DockerServer(FactBase[dict[str, Any]]):
    """Whether the login user can talk to a Docker engine (the operator's machine: Docker
    Desktop, or dockerd with the user in the `docker` group): ``{"ok": True, "version":
    "20.10.24"}`` or ``{"ok": False, "error": "permission denied while trying to connect..."}``."""

    @override
    def command(self) -> str:
        return f"echo '{_DOCKER_HEADER}'; docker version --format '{{{{.Server.Version}}}}' 2>&1 || true"

    @staticmethod
    @override
    def default() -> dict[str, Any]:
        return {"ok": False, "error": "no answer"}

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_docker_server(output)


def parse_docker_server(output: list[str]) -> dict[str, Any]:
    lines = [line.strip() for line in output if line.strip() and line.strip() != _DOCKER_HEADER]
    if len(lines) == 1 and re.match(r"^\d+\.\d+[0-9A-Za-z.+~-]*$", lines[0]):
        return {"ok": True, "version": lines[0]}
    if not lines or any("command not found" in line or "not found" == line[-9:] for line in lines):
        return {"ok": False, "error": "the docker command is not installed"}
    # docker prints the client part, then why the server did not answer
    reason = next((line for line in lines if "daemon" in line.lower() or "denied" in line.lower()), lines[-1])
    return {"ok": False, "error": reason[:300]}
