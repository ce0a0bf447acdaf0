"""
Facts for processes an ordinary user runs without root (PID files or systemd user units),
and for the state around them: who the login user is, whether a build or a database is
current. Used by deploys/parts/procs.py and deploys/youtube.py.

- ``ManagedProcesses(spec)`` -> per process: PID-file state (running / missing-pidfile /
  stale / reused / stopped), the live process tree, and who listens on its port.
  Processes are recognised by an environment marker (``INFRA_PROC=<marker>``) set when
  they are started, read from ``/proc/<pid>/environ``: a PID reused by another program
  lacks it, and an instance whose PID file was deleted is still found.
- ``UserUnits(units)`` -> the systemd user manager's state and each unit's
  ActiveState/SubState/MainPID/UnitFileState/NRestarts.
- ``Identity()`` -> ``{"user", "group", "uid", "home", "linger"}`` of the login user.
- ``MissingCommands(commands, path_prepend)`` -> which executables are not on PATH.
- ``TextFile(path)`` -> the stripped text of a small file, or None.
- ``TreeDigest(base, includes, excludes)`` -> a SHA-256 over a source tree (paths, modes,
  contents), for "rebuild only when sources or lockfiles changed".
- ``AlembicState(backend_dir, python, db_path)`` -> the database's revision(s) and the
  migration heads; read-only (SQLite opened with ``mode=ro``, heads from the scripts).

Every command exits 0 for expected negative answers (nothing running, file missing).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.api.exceptions import FactProcessError

MARKER_KEY = "INFRA_PROC"

# Runs on the host: python3 -c SCRIPT SPEC_JSON. SPEC: {"key": "INFRA_PROC", "procs":
# [{"id", "marker", "pidfile" (or null), "port" (or null), "family" (marker prefix)}]}.
# Prints one JSON object: {id: info}. Only /proc is read; nothing is changed.
PROCS_SCRIPT = r"""
import json, os, sys
spec = json.loads(sys.argv[1])
key = spec["key"].encode() + b"="

def read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None

def marker_of(pid):
    raw = read("/proc/%d/environ" % pid)
    if raw is None:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(key):
            return item[len(key):].decode("utf-8", "replace")
    return ""

def stat(pid):
    raw = read("/proc/%d/stat" % pid)
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")
    rest = text[text.rfind(")") + 2:].split()
    return {"state": rest[0], "ppid": int(rest[1]), "pgid": int(rest[2])}

def alive(pid):
    st = stat(pid)
    return st is not None and st["state"] not in ("Z", "X")

def cmdline(pid):
    raw = read("/proc/%d/cmdline" % pid) or b""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:300]

pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
markers = {}
for pid in pids:
    value = marker_of(pid)
    if value and alive(pid):
        markers[pid] = value

wanted = set(p["port"] for p in spec["procs"] if p.get("port"))
listen = {}
for name in ("/proc/net/tcp", "/proc/net/tcp6"):
    raw = read(name)
    for line in (raw or b"").decode().splitlines()[1:]:
        parts = line.split()
        if len(parts) > 9 and parts[3] == "0A":
            port = int(parts[1].rsplit(":", 1)[1], 16)
            if port in wanted:
                listen[parts[9]] = port
listening = set(listen.values())
holders = {}
if listen:
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listen:
                holders.setdefault(listen[target[8:-1]], set()).add(pid)

out = {}
for proc in spec["procs"]:
    mine = [pid for pid, value in markers.items() if value == proc["marker"]]
    tops = [pid for pid in mine if stat(pid)["ppid"] not in mine]
    others = sorted(set(value for value in markers.values()
                        if value != proc["marker"] and proc.get("family")
                        and value.startswith(proc["family"])))
    info = {"marker": proc["marker"], "pids": mine, "tops": tops, "pgids": {},
            "pidfile": proc.get("pidfile"), "pidfile_exists": False, "pidfile_pid": None,
            "pidfile_cmdline": None, "state": "stopped", "other_markers": others}
    for pid in tops:
        info["pgids"][str(pid)] = stat(pid)["pgid"]
    if proc.get("pidfile"):
        raw = read(proc["pidfile"])
        if raw is not None:
            info["pidfile_exists"] = True
            text = raw.decode("utf-8", "replace").strip()
            fpid = int(text) if text.isdigit() else None
            info["pidfile_pid"] = fpid
            if fpid is not None and fpid in mine:
                info["state"] = "running"
            elif fpid is not None and fpid > 0 and alive(fpid):
                info["state"] = "reused"
                info["pidfile_cmdline"] = cmdline(fpid)
            else:
                info["state"] = "stale"
        elif tops:
            info["state"] = "missing-pidfile"
    elif tops:
        info["state"] = "running"
    port = proc.get("port")
    if port:
        found = []
        for pid in sorted(holders.get(port, ())):
            found.append({"pid": pid, "cmdline": cmdline(pid), "marker": markers.get(pid)})
        info["port"] = {"port": port, "listening": port in listening, "holders": found}
    info["cmdlines"] = {str(pid): cmdline(pid) for pid in tops}
    out[proc["id"]] = info
print(json.dumps(out))
""".strip()


def procs_spec(procs: list[dict[str, Any]], key: str = MARKER_KEY) -> str:
    """The JSON argument of ``ManagedProcesses``: a stable string (facts are keyed by args)."""
    return json.dumps({"key": key, "procs": procs}, sort_keys=True)


def parse_json_line(output: list[str], what: str) -> Any:
    for line in reversed(output):
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except ValueError as exc:
                raise FactProcessError(f"{what}: unparsable output {line[:200]!r}") from exc
    raise FactProcessError(f"{what}: no JSON in output {output[-5:]!r}")


class ManagedProcesses(FactBase[dict[str, dict[str, Any]]]):
    """
    State of processes started with ``INFRA_PROC=<marker>`` in their environment:

    .. code:: python

        {"backend": {"state": "running", "pidfile_pid": 1234, "tops": [1234],
                     "pids": [1234, 1240], "pgids": {"1234": 1234},
                     "pidfile_exists": True, "pidfile_cmdline": None,
                     "other_markers": [], "cmdlines": {"1234": "python -m uvicorn ..."},
                     "port": {"port": 8001, "listening": True,
                              "holders": [{"pid": 1234, "cmdline": "...", "marker": "..."}]}}}

    ``state``: ``running`` (PID file names a live marked process), ``missing-pidfile``
    (marked process alive, no PID file), ``stale`` (PID file, process gone or garbage),
    ``reused`` (PID file names a live process WITHOUT the marker: another program got the
    PID), ``stopped``. ``tops`` are marked processes whose parent is not marked (the
    instance's root). Port holders of other users are invisible (no entry, but
    ``listening`` is True). ``other_markers``: live markers sharing ``family`` (the same
    instance in another mode).
    """

    @staticmethod
    def default() -> dict[str, dict[str, Any]]:
        return {}

    def requires_command(self, *args, **kwargs) -> str:
        return "python3"

    def command(self, spec: str) -> StringCommand:
        return StringCommand("python3", "-c", QuoteString(PROCS_SCRIPT), QuoteString(spec))

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        return parse_json_line(output, "ManagedProcesses")


# systemctl --user needs the user's runtime dir; SSH sessions without pam_systemd lack it.
USER_SYSTEMCTL = 'XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}" systemctl --user'
UNIT_PROPERTIES = "Id,LoadState,ActiveState,SubState,MainPID,UnitFileState,NRestarts,FragmentPath"


def parse_user_units(output: list[str]) -> dict[str, Any]:
    """``manager=<state>`` then ``systemctl show`` blocks (blank-line separated)."""
    result: dict[str, Any] = {"manager": None, "units": {}}
    block: dict[str, str] = {}

    def flush():
        if block.get("Id"):
            unit = dict(block)
            unit["MainPID"] = int(unit.get("MainPID") or 0)
            unit["NRestarts"] = int(unit.get("NRestarts") or 0) if str(unit.get("NRestarts", "")).isdigit() else 0
            result["units"][unit["Id"]] = unit
        block.clear()

    for line in output:
        line = line.rstrip()
        if line.startswith("manager="):
            result["manager"] = line.split("=", 1)[1] or None
            continue
        if not line:
            flush()
            continue
        key, sep, value = line.partition("=")
        if sep:
            block[key] = value
    flush()
    return result


class UserUnits(FactBase[dict[str, Any]]):
    """
    The login user's systemd manager and units (``units``: space-separated names):

    .. code:: python

        {"manager": "running",   # or "degraded", "offline", None (no systemctl)
         "units": {"x.service": {"ActiveState": "active", "SubState": "running",
                                 "MainPID": 1234, "UnitFileState": "enabled",
                                 "NRestarts": 0, "LoadState": "loaded", ...}}}

    ``manager`` is ``offline`` when no user manager answers (no lingering and no login
    session); units are then empty.
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"manager": None, "units": {}}

    def command(self, units: str) -> str:
        names = " ".join(shlex.quote(u) for u in units.split())
        return (
            "command -v systemctl >/dev/null 2>&1 || exit 0; "
            f"state=$({USER_SYSTEMCTL} is-system-running 2>/dev/null); "
            'case "$state" in "") echo manager=offline; exit 0;; esac; '
            'echo "manager=$state"; '
            f"{USER_SYSTEMCTL} show -p {UNIT_PROPERTIES} {names} 2>/dev/null || true"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_user_units(output)


def parse_identity(output: list[str]) -> dict[str, Any]:
    values = dict(line.split("=", 1) for line in output if "=" in line)
    return {
        "user": values.get("user"),
        "group": values.get("group"),
        "uid": int(values["uid"]) if values.get("uid", "").isdigit() else None,
        "home": values.get("home"),
        "linger": values.get("linger") == "yes",
    }


class Identity(FactBase[dict[str, Any]]):
    """The login user: ``{"user", "group", "uid", "home", "linger"}`` (linger: logind
    keeps the user's systemd manager running without a session, so units start at boot)."""

    def command(self) -> str:
        return (
            'u=$(id -un); echo "user=$u"; echo "group=$(id -gn)"; echo "uid=$(id -u)"; '
            'echo "home=$HOME"; '
            'if [ -e "/var/lib/systemd/linger/$u" ]; then echo linger=yes; else echo linger=no; fi'
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_identity(output)


class MissingCommands(FactBase[list[str]]):
    """Which of ``commands`` (space-separated names) are not found on PATH (with
    ``path_prepend``, colon-separated, in front)."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self, commands: str, path_prepend: str = "") -> str:
        names = " ".join(shlex.quote(c) for c in commands.split())
        prefix = f'PATH={shlex.quote(path_prepend)}:"$PATH"; ' if path_prepend else ""
        return f"{prefix}for c in {names}; do command -v \"$c\" >/dev/null 2>&1 || echo \"$c\"; done; true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class TextFile(FactBase[str | None]):
    """The stripped text of a small file (first 64 KiB); None when it does not exist."""

    @staticmethod
    def default() -> str | None:
        return None

    def command(self, path: str) -> StringCommand:
        q = QuoteString(path)
        return StringCommand("if [ -f", q, "]; then echo EXISTS; head -c 65536", q, "; fi")

    def process(self, output: list[str]) -> str | None:
        if not output or output[0].strip() != "EXISTS":
            return None
        return "\n".join(output[1:]).strip()


# python3 -c SCRIPT BASE INCLUDES_JSON EXCLUDES_JSON -> {"digest", "files", "missing"}.
# Excludes are fnmatch patterns matched against every path component.
DIGEST_SCRIPT = r"""
import fnmatch, hashlib, json, os, stat, sys
base, includes, excludes = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
if not os.path.isdir(base):
    print(json.dumps({"digest": None, "files": 0, "missing": includes or ["."]}))
    sys.exit(0)
def skip(name):
    return any(fnmatch.fnmatch(name, pattern) for pattern in excludes)
digest, count, missing = hashlib.sha256(), 0, []
def add(rel, path):
    global count
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        digest.update(b"L" + rel.encode() + b"\0" + os.readlink(path).encode() + b"\0")
    elif stat.S_ISREG(st.st_mode):
        digest.update(b"F" + rel.encode() + b"\0" + (b"x" if st.st_mode & 0o111 else b"-"))
        h = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
        digest.update(h.digest())
        count += 1
def walk(rel):
    path = os.path.join(base, rel) if rel else base
    if os.path.isdir(path) and not os.path.islink(path):
        for name in sorted(os.listdir(path)):
            if not skip(name):
                walk(os.path.join(rel, name) if rel else name)
    else:
        add(rel, path)
for item in includes or [""]:
    if item and not os.path.lexists(os.path.join(base, item)):
        missing.append(item)
        continue
    walk(item)
print(json.dumps({"digest": digest.hexdigest(), "files": count, "missing": missing}))
""".strip()


class TreeDigest(FactBase[dict[str, Any]]):
    """
    SHA-256 over the files under ``base`` (only ``includes``, JSON list, when given),
    skipping names matching ``excludes`` (JSON list of fnmatch patterns) at any depth:

    .. code:: python

        {"digest": "9f2c...", "files": 42, "missing": ["alembic.ini"]}

    ``digest`` is None when ``base`` is not a directory. Paths, the executable bit,
    symlink targets and contents count; timestamps do not.
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"digest": None, "files": 0, "missing": []}

    def requires_command(self, *args, **kwargs) -> str:
        return "python3"

    def command(self, base: str, includes: str = "[]", excludes: str = "[]") -> StringCommand:
        return StringCommand(
            "python3", "-c", QuoteString(DIGEST_SCRIPT), QuoteString(base), QuoteString(includes), QuoteString(excludes)
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_json_line(output, "TreeDigest")


# Run with the venv's python when it exists (heads need alembic), else python3 (current
# revision only). Never creates the database: SQLite is opened read-only by URI.
ALEMBIC_SCRIPT = r"""
import json, os, sqlite3, sys
db_path = sys.argv[1]
out = {"db_exists": os.path.exists(db_path), "current": [], "heads": None, "error": None}
if out["db_exists"]:
    try:
        con = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
        try:
            tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
            out["tables"] = sorted(tables)
            if "alembic_version" in tables:
                out["current"] = sorted(r[0] for r in con.execute("select version_num from alembic_version"))
        finally:
            con.close()
    except sqlite3.Error as e:
        out["error"] = "database: %s" % e
try:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    out["heads"] = sorted(ScriptDirectory.from_config(Config("alembic.ini")).get_heads())
except ImportError:
    pass
except Exception as e:
    out["error"] = "alembic: %s: %s" % (type(e).__name__, e)
print(json.dumps(out))
""".strip()


class AlembicState(FactBase[dict[str, Any]]):
    """
    Revision(s) of a SQLite database and the migration heads of the Alembic project in
    ``backend_dir`` (``alembic.ini`` there), asked with ``python`` (the app's venv):

    .. code:: python

        {"db_exists": True, "current": ["0001"], "heads": ["0002"], "error": None,
         "tables": ["alembic_version", "projects"]}

    ``heads`` is None when ``python`` has no alembic (venv not built yet) or the project
    directory is missing. Read-only: the database is never created or locked for writing.
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"db_exists": False, "current": [], "heads": None, "error": None}

    def requires_command(self, *args, **kwargs) -> str:
        return "python3"

    def command(self, backend_dir: str, python: str, db_path: str) -> str:
        q = shlex.quote
        return (
            f"cd {q(backend_dir)} 2>/dev/null || cd /; py={q(python)}; "
            f'[ -x "$py" ] || py=python3; "$py" -c {q(ALEMBIC_SCRIPT)} {q(db_path)}'
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_json_line(output, "AlembicState")


def at_head(state: dict[str, Any] | None) -> bool | None:
    """True when the database is at the migration heads; None when heads are unknown."""
    if not state or state.get("heads") is None:
        return None
    return bool(state.get("db_exists")) and sorted(state.get("current") or []) == sorted(state["heads"])


class MissingPaths(FactBase[list[str]]):
    """Which of ``paths`` (a JSON list) do not exist (files, directories or symlinks)."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self, paths: str) -> str:
        names = " ".join(shlex.quote(p) for p in json.loads(paths))
        return f'for p in {names}; do [ -e "$p" ] || [ -L "$p" ] || echo "$p"; done; true'

    def process(self, output: list[str]) -> list[str]:
        return [line for line in (o.rstrip("\n") for o in output) if line]


class MissingPythonModules(FactBase[list[str]]):
    """Which of ``modules`` (space-separated) the host's python3 cannot import (e.g.
    ``ensurepip``: without it `python3 -m venv` fails; Debian/Ubuntu ship it in python3-venv)."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self, modules: str) -> str:
        names = " ".join(shlex.quote(m) for m in modules.split())
        return f'for m in {names}; do python3 -c "import $m" >/dev/null 2>&1 || echo "$m"; done; true'

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class GitRevision(FactBase[dict[str, Any]]):
    """The commit checked out in ``repo`` and whether the work tree differs from it
    (tracked changes or untracked files): ``{"commit": "bd6e13d...", "dirty": True}``,
    ``commit`` None when it is not a git checkout. ``--no-optional-locks``: reading never
    writes the checkout's index."""

    @staticmethod
    def default() -> dict[str, Any]:
        return {"commit": None, "dirty": None}

    def command(self, repo: str) -> str:
        r = shlex.quote(repo)
        return (
            f"c=$(git -C {r} rev-parse HEAD 2>/dev/null) || {{ echo commit=; exit 0; }}; echo commit=$c; "
            f"if [ -n \"$(git --no-optional-locks -C {r} status --porcelain 2>/dev/null | head -n 1)\" ]; "
            "then echo dirty=yes; else echo dirty=no; fi"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        values = dict(line.split("=", 1) for line in output if "=" in line)
        commit = values.get("commit") or None
        return {"commit": commit, "dirty": (values.get("dirty") == "yes") if commit else None}


# Resolves the interpreter for a venv: an explicit one, or "auto" (the checkout's
# .python-version through pyenv when pyenv is installed, else python3). Prints key=value.
INTERPRETER_SCRIPT = r"""
want=$1; dir=$2; source=knob; pinned=
[ -f "$dir/.python-version" ] && pinned=$(head -n 1 "$dir/.python-version" | tr -d '[:space:]')
if [ "$want" = auto ]; then
  source=default; want=python3
  if [ -n "$pinned" ] && command -v pyenv >/dev/null 2>&1; then
    p=$(cd "$dir" && pyenv which python 2>/dev/null) || p=
    if [ -z "$p" ]; then v=$(pyenv latest -q "$pinned" 2>/dev/null) && p=$(PYENV_VERSION=$v pyenv which python 2>/dev/null) || p=; fi
    if [ -n "$p" ]; then want=$p; source=pyenv; else source=pyenv-missing; fi
  fi
fi
echo "pinned=$pinned"; echo "source=$source"; echo "requested=$want"
"$want" -c 'import sys; print("path=" + sys.executable); print("version=%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || true
""".strip()


class Interpreter(FactBase[dict[str, Any]]):
    """The Python a venv is built with: ``{"path", "version", "requested", "source"
    (knob | default | pyenv | pyenv-missing), "pinned" (.python-version in ``app_dir``)}``;
    ``path``/``version`` None when the interpreter does not run."""

    @staticmethod
    def default() -> dict[str, Any]:
        return {}

    def command(self, wanted: str, app_dir: str) -> StringCommand:
        return StringCommand("sh", "-c", QuoteString(INTERPRETER_SCRIPT), "interpreter", QuoteString(wanted), QuoteString(app_dir))

    def process(self, output: list[str]) -> dict[str, Any]:
        values = dict(line.split("=", 1) for line in output if "=" in line)
        return {
            "path": values.get("path") or None,
            "version": values.get("version") or None,
            "requested": values.get("requested"),
            "source": values.get("source"),
            "pinned": values.get("pinned") or None,
        }


class UserManagerPath(FactBase[str | None]):
    """PATH of the login user's systemd manager (what user units get); None without one."""

    @staticmethod
    def default() -> str | None:
        return None

    def command(self) -> str:
        return f"{USER_SYSTEMCTL} show-environment 2>/dev/null | sed -n 's/^PATH=//p'; true"

    def process(self, output: list[str]) -> str | None:
        return next((line.strip() for line in output if line.strip()), None)


class MissingCommandsIn(FactBase[list[str]]):
    """Which of ``commands`` are not found on exactly ``search_path`` (colon-separated)."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self, commands: str, search_path: str) -> str:
        names = " ".join(shlex.quote(c) for c in commands.split())
        return f"PATH={shlex.quote(search_path)}; for c in {names}; do command -v \"$c\" >/dev/null 2>&1 || echo \"$c\"; done; true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]
