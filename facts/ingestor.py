"""Facts for deploys/ingestor.py, read on the host.

- ``DockerServerVersion()`` -> ``"24.0.7"`` or None (no engine / not installed).
- ``HomeAssistantApi(url, token)`` -> ``{"status": 200, "error": None}``: GET <url>/api/ with
  the bearer token, from the host (the token is a HiddenValue: masked in pyinfra's output).
- ``ImageSources(images)`` -> ``{image: source digest label or None}`` (None: no image).
- ``SqliteState(volume, file, tables)`` -> ``{"tables", "counts", "journal_mode",
  "revision"}`` or None, read from the named volume's directory with the host's python3
  (works while the service is down; opened read-only).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pyinfra.api import FactBase, HiddenValue, QuoteString, StringCommand
from typing_extensions import override

SOURCE_LABEL = "ingestor.source"

_HA_SCRIPT = r"""
import json, os, sys, urllib.error, urllib.request
url, token = sys.argv[1], os.environ.pop("INFRA_HA_TOKEN", "")
out = {"status": None, "error": None}
try:
    req = urllib.request.Request(url.rstrip("/") + "/api/", headers={"Authorization": "Bearer " + token} if token else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        out["status"] = resp.status
except urllib.error.HTTPError as e:
    out["status"] = e.code
except Exception as e:
    out["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
""".strip()

_SQLITE_SCRIPT = r"""
import json, os, sqlite3, subprocess, sys
volume, name, tables = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
p = subprocess.run(["docker", "volume", "inspect", "--format", "{{.Mountpoint}}", volume], capture_output=True, text=True)
path = os.path.join(p.stdout.strip(), name) if p.returncode == 0 else ""
if not path or not os.path.exists(path):
    sys.exit(0)
con = sqlite3.connect("file:" + path + "?mode=ro", uri=True, timeout=10)
found = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'"))
counts = {t: con.execute('SELECT COUNT(*) FROM "%s"' % t).fetchone()[0] for t in tables if t in found}
rev = None
if "alembic_version" in found:
    row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    rev = row[0] if row else None
print(json.dumps({"tables": found, "counts": counts, "revision": rev,
                  "journal_mode": con.execute("PRAGMA journal_mode").fetchone()[0]}))
""".strip()


def _json_line(output: list[str]) -> Any:
    for line in reversed(output):
        if line.strip().startswith(("{", "[")):
            return json.loads(line)
    return None


def parse_docker_version(output: list[str]) -> str | None:
    text = "\n".join(output).strip()
    match = re.match(r"^(\d+(?:\.\d+)*)", text)
    return match.group(1) if match else None


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(version)))


class DockerServerVersion(FactBase[str | None]):
    """The engine's version ("20.10.24"); None without a running engine."""

    @override
    def command(self) -> str:
        return "docker version --format '{{.Server.Version}}' 2>/dev/null || true"

    @override
    def process(self, output: list[str]) -> str | None:
        return parse_docker_version(output)

    @staticmethod
    @override
    def default() -> str | None:
        return None


class HomeAssistantApi(FactBase[dict[str, Any] | None]):
    """GET <url>/api/ from the host, with the bearer token (or none: token=None probes
    reachability only): the HTTP status or the error.

    The token travels in the script's environment, never its argv. pyinfra wraps every
    command in `sh -c '...'`; dash execs the last command, so as root over SSH the token
    is in a process title for microseconds. Under sudo, `sudo`'s own argv would show it to
    local users for the whole check: callers pass token=None then (see deploys/ingestor.py).
    """

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "python3"

    @override
    def command(self, url: str, token: str | HiddenValue | None = None) -> StringCommand:
        probe = StringCommand("python3", "-c", QuoteString(_HA_SCRIPT), QuoteString(url))
        if token is None:
            return probe
        secret = token if isinstance(token, HiddenValue) else HiddenValue(str(token))
        # In the environment, not argv: /proc/<pid>/cmdline is readable by every user.
        return StringCommand(StringCommand("INFRA_HA_TOKEN=", QuoteString(secret), _separator=""), probe)

    @override
    def process(self, output: list[str]) -> dict[str, Any] | None:
        return _json_line(output)

    @staticmethod
    @override
    def default() -> dict[str, Any] | None:
        return None


def home_assistant_problem(url: str, result: dict[str, Any] | None, token_sent: bool = True) -> str | None:
    """None when Home Assistant accepted the token (or, probing without one, answered at
    all: 401 proves it is there); the reason otherwise (never the token)."""
    if not result:
        return f"Home Assistant {url}: no answer (python3 missing on the host?)"
    if result.get("error"):
        return f"Home Assistant {url} unreachable from the host: {result['error']}"
    if not token_sent and result.get("status") in (200, 401):
        return None
    if result.get("status") in (401, 403):
        return f"Home Assistant {url} rejected HOME_ASSISTANT_TOKEN (HTTP {result['status']})"
    if result.get("status") != 200:
        return f"Home Assistant {url}/api/ answered HTTP {result.get('status')}"
    return None


def image_sources_command(images: list[str]) -> str:
    """One `image|label` line per image; `-` when the image does not exist."""
    import shlex

    fmt = '{{index .Config.Labels "%s"}}' % SOURCE_LABEL
    lines = [
        f"printf '%s|%s\\n' {shlex.quote(i)} \"$(docker image inspect --format {shlex.quote(fmt)} "
        f"{shlex.quote(i)} 2>/dev/null || echo -)\""
        for i in images
    ]
    return "; ".join(lines) or "true"


def parse_image_sources(output: list[str]) -> dict[str, str | None]:
    sources: dict[str, str | None] = {}
    for line in output:
        image, sep, label = line.strip().partition("|")
        if sep:
            sources[image] = None if label in ("-", "", "<no value>") else label
    return sources


class ImageSources(FactBase[dict[str, str | None]]):
    """Image -> the source digest it was built from (label ingestor.source); None if absent."""

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "docker"

    @override
    def command(self, images: list[str]) -> str:
        return image_sources_command(list(images))

    @override
    def process(self, output: list[str]) -> dict[str, str | None]:
        return parse_image_sources(output)

    @staticmethod
    @override
    def default() -> dict[str, str | None]:
        return {}


class SqliteState(FactBase[dict[str, Any] | None]):
    """An SQLite file in a named volume: tables, row counts, journal mode, Alembic revision."""

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "docker"

    @override
    def command(self, volume: str, file: str, tables: list[str]) -> StringCommand:
        return StringCommand("python3", "-c", QuoteString(_SQLITE_SCRIPT), QuoteString(volume),
                             QuoteString(file), QuoteString(json.dumps(list(tables))))

    @override
    def process(self, output: list[str]) -> dict[str, Any] | None:
        return _json_line(output)

    @staticmethod
    @override
    def default() -> dict[str, Any] | None:
        return None


def package_version(version: str | None) -> str | None:
    """An apt version's upstream part: "5:24.0.7-1~debian.12~bookworm" -> "24.0.7",
    "20.10.24+dfsg1-1+deb12u1" -> "20.10.24"; None for "(none)" or nothing."""
    if not version or version.strip() in ("(none)", ""):
        return None
    match = re.match(r"^(?:\d+:)?(\d+(?:\.\d+)*)", version.strip())
    return match.group(1) if match else None


def parse_apt_candidates(output: list[str]) -> dict[str, str | None]:
    """`apt-cache policy P...` -> {package: candidate version or None}."""
    found: dict[str, str | None] = {}
    current = None
    for line in output:
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = line.strip()[:-1]
            found[current] = None
        elif current and line.strip().startswith("Candidate:"):
            found[current] = package_version(line.split(":", 1)[1])
    return found


class AptCandidates(FactBase[dict[str, str | None]]):
    """{package: the version `apt-get install` would install now} (None: not available
    from the configured sources). Read before Docker is installed, so preflight can check
    the version the package source will give."""

    @override
    def command(self, packages: list[str]) -> StringCommand:
        return StringCommand("apt-cache", "policy", *[QuoteString(p) for p in packages], "2>/dev/null", "||", "true")

    @override
    def process(self, output: list[str]) -> dict[str, str | None]:
        return parse_apt_candidates(output)

    @staticmethod
    @override
    def default() -> dict[str, str | None]:
        return {}


_BASES_SCRIPT = r"""
import json, os, subprocess, sys
builds_path, images, refs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
FORMAT = '{{.Id}}|{{index .Config.Labels "%s"}}'
def inspect(names):
    p = subprocess.run(["docker", "image", "inspect", "--format", FORMAT] + names, capture_output=True, text=True)
    return p.returncode, p.stdout.splitlines()
def one(ref):
    code, lines = inspect([ref])
    return lines[0] if code == 0 and lines else None
names = sorted(set(images) | set(refs))
code, lines = inspect(names) if names else (0, [])
found = dict(zip(names, lines)) if code == 0 and len(lines) == len(names) else {r: one(r) for r in names}
ids, labels = {}, {}
for ref in names:
    image_id, _, label = (found[ref] or "").partition("|")
    ids[ref] = image_id.strip() or None
    labels[ref] = None if found[ref] is None or label in ("-", "", "<no value>") else label
builds = json.load(open(builds_path)) if os.path.exists(builds_path) else {}
print(json.dumps({"builds": builds, "ids": ids, "labels": labels}))
""".strip() % SOURCE_LABEL


class BuildBases(FactBase[dict[str, Any]]):
    """What bin/ingestor-release recorded about its builds (<dir>/builds.json: built image
    id -> {FROM ref: base image id}), and the image ids and source labels (`ImageSources`'s
    answer) of `images` and `refs` now: one `docker image inspect` of them all (one per
    image only when some are missing), not one per image in each of two facts."""

    @override
    def requires_command(self, *args, **kwargs) -> str:
        return "python3"

    @override
    def command(self, builds_path: str, images: list[str], refs: list[str]) -> StringCommand:
        return StringCommand("python3", "-c", QuoteString(_BASES_SCRIPT), QuoteString(builds_path),
                             QuoteString(json.dumps(sorted(images))), QuoteString(json.dumps(sorted(refs))))

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        return _json_line(output) or self.default()

    @staticmethod
    @override
    def default() -> dict[str, Any]:
        return {"builds": {}, "ids": {}, "labels": {}}


def stale_bases(image: str, refs: list[str], state: dict[str, Any]) -> list[str]:
    """The FROM refs of `image` whose base image changed since it was built (as
    bin/ingestor-release's stale_bases): no record of the image's build -> every ref; a
    ref the host does not have -> not counted (the build pulls it)."""
    built = state["ids"].get(image)
    if not refs or not built:
        return []
    recorded = state["builds"].get(built)
    if recorded is None:
        return list(refs)
    return [r for r in refs if (now := state["ids"].get(r)) and recorded.get(r) != now]
