"""YouTube assistant production beside development, as the operator (no root).

    pyinfra inventory.py deploys/youtube.py                          # test hosts
    DEPLOY_ENV=prod pyinfra inventory.py deploys/youtube.py          # this machine (@local)
    ... --data youtube_action=start|stop|restart|status              # run control

The plan (seed 003), phases 1 and 2, as one idempotent deploy on the machine that holds
the development checkout (`youtube_source_dir`):

- build: the frontend's production build runs in a scratch copy of the frontend
  (`youtube_build_dir`, so dev's .next is never touched), with the production env baked
  in; the backend gets `venv-prod` with runtime requirements only. Each is rebuilt only
  when its sources / lockfile / build settings changed (SHA-256 digests in stamp files).
- deploy: copies (never symlinks) to `youtube_prod_dir`; `.env` files (0600) rendered from
  data plus secret values from the operator's .env; the production database is backed up,
  then migrated with Alembic before anything starts.
- run: PID files (`pids/`, logs in the production directory) or systemd user units
  (`youtube_mode`), see deploys/parts/procs.py for every edge case; switching modes stops
  the other mode's processes first. Health gates on both ports.

Production is stopped before anything it uses changes and started again afterwards; a
run that changes nothing touches nothing (0 changes). Development (8000/3000,
youtube_assistant.db, its venv and node_modules) shares no port, database, venv or file.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from dataclasses import dataclass
from io import StringIO
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.context import ctx_host
from pyinfra.facts.files import Sha256File
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from deploys import secrets as secret_store
from deploys.errors import ConfigError, PreflightFailed
from deploys.operations import secret_file, wait_until
from deploys.parts.health import http_check
from deploys.parts.preflight import collect_problems
from deploys.parts.procs import (
    MODES,
    ProcSpec,
    linger_enabled,
    pid_process_running,
    pid_process_stopped,
    port_problem,
    processes,
    say,
    status_report,
    user_units_removed,
    user_units_running,
    user_units_stopped,
)
from deploys.parts.service import render_env_file
from deploys.templating import render
from facts.procs import (
    USER_SYSTEMCTL,
    AlembicState,
    Identity,
    MissingCommands,
    MissingPaths,
    MissingPythonModules,
    TextFile,
    TreeDigest,
    UserUnits,
    at_head,
)
from facts.system import PythonVersion

q = shlex.quote
ACTIONS = ("deploy", "start", "stop", "restart", "status")
PLACEHOLDERS = (
    "home", "prod_dir", "backend_dir", "frontend_dir", "venv", "db_path", "bind", "backend_port", "frontend_port",
)
UNIT_TEMPLATE = "home/.config/systemd/user/user-service.j2"
BACKEND_EXCLUDES = ["__pycache__", "*.pyc", ".env*", "*.db", "venv*", ".venv", ".pytest_cache"]


# ----------------------------------------------------------------------------- layout


def expand(path: str, home: str) -> str:
    """`~/x` -> `<home>/x`; relative paths are relative to the home directory too."""
    path = str(path)
    if path == "~":
        return home
    if path.startswith("~/"):
        path = path[2:]
    return str(PurePosixPath(home) / path) if not path.startswith("/") else path.rstrip("/") or "/"


@dataclass(frozen=True)
class Layout:
    """Every path of the deploy, resolved for the login user."""

    home: str
    source: str
    prod: str
    build_root: str
    db_name: str
    unit_dir: str

    @classmethod
    def from_data(cls, data, home: str) -> Layout:
        return cls(
            home=home,
            source=expand(data.youtube_source_dir, home),
            prod=expand(data.youtube_prod_dir, home),
            build_root=expand(data.youtube_build_dir, home),
            db_name=data.youtube_db_name,
            unit_dir=f"{home}/.config/systemd/user",
        )

    src_backend = property(lambda self: f"{self.source}/backend")
    src_frontend = property(lambda self: f"{self.source}/frontend")
    backend = property(lambda self: f"{self.prod}/backend")
    frontend = property(lambda self: f"{self.prod}/frontend")
    venv = property(lambda self: f"{self.prod}/backend/venv-prod")
    db_path = property(lambda self: f"{self.prod}/backend/{self.db_name}")
    pids = property(lambda self: f"{self.prod}/pids")
    backups = property(lambda self: f"{self.prod}/backups")
    release_marker = property(lambda self: f"{self.prod}/.release")
    build_frontend = property(lambda self: f"{self.build_root}/frontend")
    build_stamp = property(lambda self: f"{self.build_root}/frontend.built")
    venv_stamp = property(lambda self: f"{self.prod}/backend/venv-prod/.infra-requirements")


def placeholders(data, layout: Layout) -> dict[str, str]:
    return {
        "home": layout.home,
        "prod_dir": layout.prod,
        "backend_dir": layout.backend,
        "frontend_dir": layout.frontend,
        "venv": layout.venv,
        "db_path": layout.db_path,
        "bind": str(data.youtube_bind),
        "backend_port": str(data.youtube_backend_port),
        "frontend_port": str(data.youtube_frontend_port),
    }


def fill(text: str, values: dict[str, str], what: str) -> str:
    """str.format with the known placeholders only; a clear error for anything else."""
    try:
        return str(text).format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"youtube: {what} {text!r}: unknown placeholder {exc} (known: {', '.join(PLACEHOLDERS)})") from exc


def path_prepend(data, layout: Layout) -> tuple[str, ...]:
    return tuple(expand(p, layout.home) for p in (data.youtube_path_prepend or []))


def backend_env(data, layout: Layout, secret_values: dict | None = None) -> dict:
    values = placeholders(data, layout)
    env = {k: fill(v, values, f"youtube_backend_env[{k}]") for k, v in (data.youtube_backend_env or {}).items()}
    env.update(secret_values or {})
    return env


def frontend_env(data, layout: Layout) -> dict:
    values = placeholders(data, layout)
    return {k: fill(v, values, f"youtube_frontend_env[{k}]") for k, v in (data.youtube_frontend_env or {}).items()}


def proc_specs(data, layout: Layout) -> list[ProcSpec]:
    values = placeholders(data, layout)
    family = f"aqa-youtube-prod:{layout.prod}"
    prefix = data.youtube_unit_prefix
    common = {"path_prepend": path_prepend(data, layout)}

    def proc(role: str, cwd: str) -> ProcSpec:
        port = int(data.get(f"youtube_{role}_port"))
        return ProcSpec(
            id=role,
            description=f"YouTube assistant production {role}",
            command=fill(data.get(f"youtube_{role}_cmd"), values, f"youtube_{role}_cmd"),
            cwd=cwd,
            env_file=f"{cwd}/.env",
            log=f"{layout.prod}/{role}.log",
            pidfile=f"{layout.pids}/{role}.pid",
            port=port,
            family=f"{family}:{role}",
            unit=f"{prefix}-{role}.service",
            health_url=f"http://127.0.0.1:{port}{data.get(f'youtube_{role}_health_path')}",
            **common,
        )

    return [proc("backend", layout.backend), proc("frontend", layout.frontend)]


def systemd_exec_quote(command: str) -> str:
    """One double-quoted ExecStart argument: systemd unescapes \\ and \", and would expand
    `$VAR` and `%x` itself, so those are doubled."""
    escaped = command.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def render_unit(spec: ProcSpec, data, after: tuple[str, ...] = ()) -> str:
    exec_line = f"exec {spec.command}"
    if spec.path_prepend:
        exec_line = f'PATH={q(":".join(spec.path_prepend))}:"$PATH" {exec_line}'
    return render(
        UNIT_TEMPLATE,
        source="deploys/youtube.py",
        unit=spec.unit,
        description=spec.description,
        after=list(after),
        cwd=spec.cwd,
        env_file=spec.env_file,
        marker=f"INFRA_PROC={spec.marker('systemd')}",
        env=[f"{k}={v}" for k, v in sorted(spec.env.items())],
        exec_start=systemd_exec_quote(exec_line),
        restart=data.youtube_restart,
        restart_sec=int(data.youtube_restart_sec),
        stop_timeout_s=int(data.youtube_stop_timeout_s),
        log=spec.log,
    )


def unit_files(specs: list[ProcSpec], data) -> dict[str, str]:
    backend, frontend = specs
    return {
        backend.unit: render_unit(backend, data),
        frontend.unit: render_unit(frontend, data, after=(backend.unit,)),
    }


def digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode() + b"\0")
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def first_word(command: str) -> str | None:
    """The executable of a shell command line (after VAR=value assignments)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for word in words:
        if "=" in word.split("/")[0] and not word.startswith("="):
            continue
        return word
    return None


# ----------------------------------------------------------------------------- config


def check_config(data) -> None:
    """Knobs that are wrong before anything connects; one message for all."""
    problems = []
    if data.youtube_action not in ACTIONS:
        problems.append(f"youtube_action {data.youtube_action!r} is not one of {', '.join(ACTIONS)}")
    if data.youtube_mode not in MODES:
        problems.append(f"youtube_mode {data.youtube_mode!r} is not one of {', '.join(MODES)}")
    ports = {}
    for key in ("youtube_backend_port", "youtube_frontend_port"):
        value = data.get(key)
        if not isinstance(value, int) or not 0 < value < 65536:
            problems.append(f"{key} {value!r} is not a TCP port")
        ports[key] = value
    if ports["youtube_backend_port"] == ports["youtube_frontend_port"]:
        problems.append("youtube_backend_port and youtube_frontend_port are the same port")
    dev_ports = list(data.youtube_dev_ports or [])
    for key, value in ports.items():
        if value in dev_ports:
            problems.append(f"{key} {value} is a development port ({dev_ports}): production must not share it")
    db = str(data.youtube_db_name or "")
    if not db or "/" in db or db.startswith("."):
        problems.append(f"youtube_db_name {db!r} must be a plain file name")
    if db == data.youtube_dev_db_name:
        problems.append(f"youtube_db_name {db!r} is the development database")
    home = "/home/user"
    source, prod = expand(data.youtube_source_dir, home), expand(data.youtube_prod_dir, home)
    build = expand(data.youtube_build_dir, home)
    if prod in (home, "/") or source in (home, "/"):
        problems.append("youtube_prod_dir and youtube_source_dir must be directories below the home directory")
    for a, b, what in ((prod, source, "youtube_prod_dir"), (build, source, "youtube_build_dir")):
        if a == b or a.startswith(b + "/"):
            problems.append(f"{what} must not be inside the development checkout (youtube_source_dir)")
    if source.startswith(prod + "/"):
        problems.append("youtube_source_dir must not be inside youtube_prod_dir")
    for key in ("youtube_backend_cmd", "youtube_frontend_cmd", "youtube_migrate_cmd"):
        if not str(data.get(key) or "").strip():
            problems.append(f"{key} is empty")
    if not data.youtube_backend_paths:
        problems.append("youtube_backend_paths is empty")
    if data.youtube_frontend_artifact not in (data.youtube_frontend_paths or []):
        problems.append(f"youtube_frontend_artifact {data.youtube_frontend_artifact!r} is not in youtube_frontend_paths")
    for key in ("youtube_backend_env", "youtube_frontend_env"):
        bad = [k for k in (data.get(key) or {}) if not str(k).isidentifier()]
        if bad:
            problems.append(f"{key}: invalid variable names {bad}")
    bad = [n for n in (data.youtube_backend_secrets or []) if not str(n).isidentifier()]
    if bad:
        problems.append(f"youtube_backend_secrets: invalid variable names {bad}")
    if problems:
        raise ConfigError("youtube: " + "; ".join(problems))
    # placeholders: raise on unknown ones now, with fake paths
    layout = Layout.from_data(data, home)
    backend_env(data, layout), frontend_env(data, layout), proc_specs(data, layout)
    for arg in data.youtube_pip_args or []:
        fill(arg, placeholders(data, layout), "youtube_pip_args")


# ----------------------------------------------------------------------------- operations


@operation()
def frontend_built(
    src: str,
    build_dir: str,
    stamp: str,
    wanted: str,
    excludes: list[str],
    install_cmd: str,
    build_cmd: str,
    env: dict,
    path: tuple = (),
    artifact: str = ".next",
):
    """The production build in a scratch copy of the frontend; nothing when the stamp
    (digest of sources, lockfile, commands and baked env) matches and the artifact exists."""
    current = host.get_fact(TextFile, path=stamp)
    if current == wanted and not host.get_fact(MissingPaths, paths=json.dumps([f"{build_dir}/{artifact}"])):
        host.noop(f"frontend build is current ({wanted[:12]})")
        return
    say(f"building the frontend ({'sources changed' if current else 'first build'}) in {build_dir}")
    ex = " ".join(f"--exclude={q(p)}" for p in excludes)
    yield StringCommand(
        f"rm -rf {q(build_dir)} {q(stamp)} && mkdir -p {q(build_dir)} && "
        f"tar -C {q(src)} {ex} -cf - . | tar -C {q(build_dir)} -xf -"
    )
    exports = " ".join(f"{k}={q(str(v))}" for k, v in sorted(env.items()))
    exports = f"export {exports} && " if exports else ""
    if path:
        exports += f'export PATH={q(":".join(path))}:"$PATH" && '
    for what, cmd in (("install", install_cmd), ("build", build_cmd)):
        if cmd:
            yield StringCommand(f"cd {q(build_dir)} && {exports}{cmd} > .infra-{what}.log 2>&1 || {{ tail -n 40 .infra-{what}.log >&2; echo {q(f'frontend {what} failed: {cmd}')} >&2; exit 1; }}")
    target = f"{build_dir}/{artifact}"
    yield StringCommand(f"[ -e {q(target)} ] || {{ echo {q(f'the frontend build produced no {artifact} (youtube_frontend_artifact)')} >&2; exit 1; }}")
    yield StringCommand(f"echo {q(wanted)} > {q(stamp)}")


@operation()
def backend_venv(venv: str, requirements: str, pip_args: list[str], wanted: str, stamp: str):
    """venv-prod from the runtime requirements; rebuilt only when the stamp (requirements
    digest, pip arguments, python version) differs. Built in place: venvs are not relocatable."""
    if host.get_fact(TextFile, path=stamp) == wanted and not host.get_fact(
        MissingPaths, paths=json.dumps([f"{venv}/bin/python"])
    ):
        host.noop(f"venv-prod is current ({wanted[:12]})")
        return
    say(f"building venv-prod from {requirements}")
    yield StringCommand(f"rm -rf {q(venv)} && python3 -m venv {q(venv)}")
    args = " ".join(q(a) for a in pip_args)
    yield StringCommand(
        f"{q(venv + '/bin/pip')} install --quiet --disable-pip-version-check {args} -r {q(requirements)}"
    )
    yield StringCommand(f"echo {q(wanted)} > {q(stamp)}")


@operation()
def release_installed(
    release: str,
    marker: str,
    copies: list[tuple[str, str, list[str], bool]],
    required: list[str],
):
    """Copy (never link) the backend code and the frontend build into production.

    `copies`: (source dir, production dir, names, drop caches) - each name is replaced as
    a whole, so files deleted in the source disappear; with "drop caches", __pycache__
    directories copied from the checkout are removed. Nothing happens when `marker` holds `release`
    and the required paths exist.
    """
    if host.get_fact(TextFile, path=marker) == release and not host.get_fact(MissingPaths, paths=json.dumps(required)):
        host.noop(f"release {release[:12]} is installed")
        return
    say(f"installing release {release[:12]}")
    yield StringCommand(f"rm -f {q(marker)}")
    for src, dest, names, drop_caches in copies:
        for name in names:
            s, d = q(f"{src}/{name}"), q(f"{dest}/{name}")
            yield StringCommand(f"rm -rf {d} && if [ -e {s} ] || [ -L {s} ]; then cp -a {s} {d}; fi")
        if drop_caches:
            targets = " ".join(q(f"{dest}/{n}") for n in names)
            yield StringCommand(
                f"for t in {targets}; do [ -d \"$t\" ] && find \"$t\" -name __pycache__ -prune -exec rm -rf {{}} +; done; true"
            )
    yield StringCommand(f"echo {q(release)} > {q(marker)}")


# python3 -c BACKUP SRC DEST: a consistent SQLite copy (online backup API), never the live file.
BACKUP_SCRIPT = (
    "import sqlite3, sys; s = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True); "
    "d = sqlite3.connect(sys.argv[2]); s.backup(d); d.close(); s.close()"
)


@operation()
def database_migrated(
    backend_dir: str,
    python: str,
    db_path: str,
    backups: str,
    keep: int,
    env_file: str,
    migrate_cmd: str,
    stamp: str,
):
    """Back up the database, then `alembic upgrade head`; nothing when it is at head."""
    st = host.get_fact(AlembicState, backend_dir=backend_dir, python=python, db_path=db_path)
    if at_head(st):
        host.noop(f"database at head {', '.join(st['heads'])}")
        return
    current = ", ".join(st.get("current") or []) or ("empty" if st.get("db_exists") else "new")
    say(f"migrating {db_path} from {current} to {', '.join(st.get('heads') or ['head'])}")
    if st.get("db_exists"):
        name = PurePosixPath(db_path).stem
        dest = f"{backups}/{name}-{stamp}-at-{(st.get('current') or ['none'])[0]}.db"
        say(f"backing up the database to {dest}")
        yield StringCommand(
            f"umask 077 && mkdir -p {q(backups)} && python3 -c {q(BACKUP_SCRIPT)} {q(db_path)} {q(dest)} && "
            f"ls -1t {q(backups)}/{q(name)}-*.db | tail -n +{int(keep) + 1} | xargs -r rm -f"
        )
    yield StringCommand(
        f"cd {q(backend_dir)} && set -a && . {q(env_file)} && set +a && {migrate_cmd} "
        f"|| {{ echo {q('alembic migration failed (the backup is in ' + backups + ')')} >&2; exit 1; }}"
    )


# ----------------------------------------------------------------------------- phases


@dataclass
class Context:
    data: object
    ident: dict
    layout: Layout
    specs: list[ProcSpec]


def preflight(ctx: Context, action: str, extra: list[str] | None = None) -> None:
    """Everything that would stop the run, checked before the first change; one message."""
    data, layout = ctx.data, ctx.layout
    problems = list(extra or [])
    if ctx.ident.get("uid") == 0:
        problems.append(
            "connected as root: the YouTube assistant runs as an ordinary user "
            "(set ssh_user to the operator, or run pyinfra @local as yourself)"
        )
    secrets = list(data.youtube_backend_secrets or []) if action == "deploy" else []
    problems += collect_problems(secrets=secrets, disk_paths=(layout.home,))
    if action in ("deploy", "start", "restart"):
        info = processes(ctx.specs, data.youtube_mode)
        for spec in ctx.specs:
            if problem := port_problem(spec, info.get(spec.id, {})):
                problems.append(problem)
        if data.youtube_mode == "systemd" and data.youtube_linger and not ctx.ident.get("linger") and not data.youtube_linger_sudo:
            user = ctx.ident.get("user")
            problems.append(
                f"youtube_mode 'systemd' starts the units at boot/login through lingering, which is off for {user}: "
                f"run `loginctl enable-linger` in your desktop session (or `sudo loginctl enable-linger {user}`) once, "
                "or set youtube_linger_sudo = True to let the deploy run that one command with sudo "
                "(or youtube_linger = False: units start at login and stop at logout)"
            )
        if data.youtube_mode == "systemd" and not data.youtube_linger:
            manager = host.get_fact(UserUnits, units="default.target").get("manager")
            if manager in (None, "offline"):
                problems.append("no systemd user manager answers (no desktop session, lingering off): enable lingering")
    if problems:
        raise PreflightFailed(f"preflight failed on {host.name}: " + "; ".join(problems))
    host.noop("preflight checks passed")


def source_problems(ctx: Context) -> list[str]:
    """'Run from the wrong directory': the checkout must look like the app's."""
    data, layout = ctx.data, ctx.layout
    wanted = [
        layout.src_backend,
        f"{layout.src_backend}/{data.youtube_backend_requirements}",
        f"{layout.src_backend}/alembic.ini",
        f"{layout.src_backend}/{data.youtube_backend_paths[0]}",
        layout.src_frontend,
    ]
    missing = host.get_fact(MissingPaths, paths=json.dumps(wanted))
    if not missing:
        return []
    rel = [m[len(layout.source) + 1:] if m.startswith(layout.source + "/") else m for m in missing]
    return [
        f"youtube_source_dir {layout.source} is not a checkout of the YouTube assistant (missing: {', '.join(rel)}); "
        "set youtube_source_dir to your development checkout (e.g. ~/dev/aqa-youtube-assistant)"
    ]


def command_problems(ctx: Context, need_venv_build: bool) -> list[str]:
    data, layout = ctx.data, ctx.layout
    values = placeholders(data, layout)
    needed: dict[str, str] = {}
    for key in ("youtube_frontend_install_cmd", "youtube_frontend_build_cmd", "youtube_frontend_cmd",
                "youtube_backend_cmd", "youtube_migrate_cmd"):
        command = fill(data.get(key) or "", values, key)
        word = first_word(command) if command.strip() else None
        if word and "/" not in word:
            needed.setdefault(word, key)
    problems = []
    missing = host.get_fact(MissingCommands, commands=" ".join(sorted(needed)), path_prepend=":".join(path_prepend(data, layout)))
    for word in missing:
        problems.append(f"`{word}` is not on PATH (needed by {needed[word]}): install it or add its directory to youtube_path_prepend")
    if need_venv_build and host.get_fact(MissingPythonModules, modules="venv ensurepip"):
        problems.append("python3 cannot create virtual environments (no ensurepip): install python3-venv (sudo apt install python3-venv)")
    return problems


def deployed_problems(ctx: Context) -> list[str]:
    """'Run without a build': start needs a complete deployment."""
    layout, data = ctx.layout, ctx.data
    wanted = [
        layout.release_marker,
        f"{layout.venv}/bin/python",
        f"{layout.frontend}/{data.youtube_frontend_artifact}",
        f"{layout.backend}/.env",
        f"{layout.frontend}/.env",
    ]
    missing = host.get_fact(MissingPaths, paths=json.dumps(wanted))
    if not missing:
        return []
    return [
        f"production is not built and deployed in {layout.prod} (missing: {', '.join(missing)}): "
        "run the deploy first (`make youtube-deploy`: builds, deploys and starts)"
    ]


@deploy("Stop production")
def stop_all(ctx: Context):
    for spec in reversed(ctx.specs):
        pid_process_stopped(name=f"{spec.id} stopped (PID file)", spec=spec, stop_timeout_s=ctx.data.youtube_stop_timeout_s)
    user_units_stopped(name="User units stopped", specs=ctx.specs)


@deploy("Run production")
def run(ctx: Context):
    data, specs, layout = ctx.data, ctx.specs, ctx.layout
    if data.youtube_mode == "pidfile":
        user_units_removed(name="No systemd user units (PID-file mode)", specs=specs, unit_dir=layout.unit_dir)
        for spec in specs:
            pid_process_running(name=f"{spec.id} running (PID file)", spec=spec, start_timeout_s=data.youtube_start_timeout_s)
        return
    if data.youtube_linger:
        linger_enabled(name="Lingering enabled (units start at boot)", use_sudo=bool(data.youtube_linger_sudo))
    for spec in reversed(specs):
        pid_process_stopped(name=f"{spec.id}: no PID-file instance (systemd mode)", spec=spec, stop_timeout_s=data.youtube_stop_timeout_s)
    files.directory(name=f"{layout.unit_dir}", path=layout.unit_dir, present=True)
    changed = []
    for unit, text in unit_files(specs, data).items():
        changed.append(files.put(name=f"Unit {unit}", src=StringIO(text), dest=f"{layout.unit_dir}/{unit}", mode="644"))
    server.shell(
        name="Reload the systemd user manager",
        commands=[f"{USER_SYSTEMCTL} daemon-reload"],
        _if=any_changed(*changed),
    )
    user_units_running(name="Units enabled and running", specs=specs, start_timeout_s=data.youtube_start_timeout_s)


@deploy("Health gates")
def health(ctx: Context):
    for spec in ctx.specs:
        wait_until(
            name=f"{spec.id} healthy on {spec.health_url}",
            check=http_check(spec.health_url),
            description=spec.health_url,
            timeout_s=ctx.data.health_timeout_s,
            interval_s=1,
        )


def deploy_all(ctx: Context) -> None:
    data, layout, specs = ctx.data, ctx.layout, ctx.specs
    values = placeholders(data, layout)
    path = path_prepend(data, layout)

    # What the run would change (all read now; only this deploy changes these files).
    src_backend = host.get_fact(
        TreeDigest, base=layout.src_backend, includes=json.dumps(data.youtube_backend_paths),
        excludes=json.dumps(BACKEND_EXCLUDES),
    )
    src_frontend = host.get_fact(
        TreeDigest, base=layout.src_frontend, includes="[]", excludes=json.dumps(data.youtube_frontend_excludes),
    )
    fe_env = frontend_env(data, layout)
    build_wanted = digest(
        "frontend", src_frontend.get("digest"), data.youtube_frontend_install_cmd, data.youtube_frontend_build_cmd,
        fe_env, path, data.youtube_frontend_excludes,
    )
    requirements = f"{layout.src_backend}/{data.youtube_backend_requirements}"
    pip_args = [fill(a, values, "youtube_pip_args") for a in data.youtube_pip_args or []]
    venv_wanted = digest(
        "venv", host.get_fact(Sha256File, path=requirements), pip_args, host.get_fact(PythonVersion),
    )
    release = digest(
        "release", src_backend.get("digest"), build_wanted, data.youtube_backend_paths, data.youtube_frontend_paths,
    )
    secret_values = secret_store.get(list(data.youtube_backend_secrets or []))
    env_files = {
        f"{layout.backend}/.env": render_env_file(backend_env(data, layout, secret_values)),
        f"{layout.frontend}/.env": render_env_file(fe_env),
    }
    venv_pending = host.get_fact(TextFile, path=layout.venv_stamp) != venv_wanted
    preflight(ctx, "deploy", source_problems(ctx) + command_problems(ctx, venv_pending))

    pending = [
        what
        for what, differs in (
            ("release", host.get_fact(TextFile, path=layout.release_marker) != release),
            ("venv-prod", venv_pending),
            ("configuration", any(
                host.get_fact(Sha256File, path=dest) != sha256_text(content.unmask()) for dest, content in env_files.items()
            )),
            ("database", at_head(host.get_fact(
                AlembicState, backend_dir=layout.backend, python=f"{layout.venv}/bin/python", db_path=layout.db_path,
            )) is False),
            ("units", data.youtube_mode == "systemd" and any(
                host.get_fact(Sha256File, path=f"{layout.unit_dir}/{u}") != sha256_text(t)
                for u, t in unit_files(specs, data).items()
            )),
        )
        if differs
    ]

    for path_, mode in ((layout.prod, "700"), (layout.backend, "700"), (layout.frontend, "700"),
                        (layout.pids, "700"), (layout.backups, "700"), (layout.build_root, "700")):
        files.directory(name=f"{path_}", path=path_, present=True, mode=mode)

    frontend_built(
        name="Frontend production build",
        src=layout.src_frontend, build_dir=layout.build_frontend, stamp=layout.build_stamp, wanted=build_wanted,
        excludes=list(data.youtube_frontend_excludes or []),
        install_cmd=fill(data.youtube_frontend_install_cmd or "", values, "youtube_frontend_install_cmd"),
        build_cmd=fill(data.youtube_frontend_build_cmd or "", values, "youtube_frontend_build_cmd"),
        env=fe_env, path=path, artifact=data.youtube_frontend_artifact,
    )
    if pending:
        then = ", then started again" if data.youtube_start_after_deploy else " (and left stopped: youtube_start_after_deploy)"
        host.log(f"production changes ({', '.join(pending)}): it is stopped first{then}")
        stop_all(ctx)
    backend_venv(
        name="Backend venv-prod (runtime requirements)",
        venv=layout.venv, requirements=requirements, pip_args=pip_args, wanted=venv_wanted, stamp=layout.venv_stamp,
    )
    release_installed(
        name="Release copied into production",
        release=release, marker=layout.release_marker,
        copies=[
            (layout.src_backend, layout.backend, list(data.youtube_backend_paths), True),
            (layout.build_frontend, layout.frontend, list(data.youtube_frontend_paths), False),
        ],
        required=[f"{layout.backend}/{data.youtube_backend_paths[0]}", f"{layout.frontend}/{data.youtube_frontend_artifact}"],
    )
    for dest, content in env_files.items():
        secret_file(
            name=f"{dest} (0600)", dest=dest, content=content,
            user=ctx.ident["user"], group=ctx.ident["group"], mode="600",
        )
    database_migrated(
        name="Database backed up and migrated",
        backend_dir=layout.backend, python=f"{layout.venv}/bin/python", db_path=layout.db_path,
        backups=layout.backups, keep=data.youtube_keep_backups, env_file=f"{layout.backend}/.env",
        migrate_cmd=fill(data.youtube_migrate_cmd, values, "youtube_migrate_cmd"),
        stamp=time.strftime("%Y%m%dT%H%M%S"),
    )
    if data.youtube_start_after_deploy:
        run(ctx)
        health(ctx)


def main(data) -> None:
    check_config(data)
    ident = host.get_fact(Identity)
    if not ident.get("home"):
        raise PreflightFailed(f"preflight failed on {host.name}: the login user has no HOME")
    layout = Layout.from_data(data, ident["home"])
    ctx = Context(data, ident, layout, proc_specs(data, layout))
    action = data.youtube_action
    title = (
        f"YouTube assistant production in {layout.prod} (mode {data.youtube_mode}; "
        f"backend :{data.youtube_backend_port}, frontend :{data.youtube_frontend_port})"
    )
    if action == "deploy":
        deploy_all(ctx)
    elif action == "status":
        release = host.get_fact(TextFile, path=layout.release_marker)
        extra = [f"  release {release[:12]}" if release else "  not deployed yet (run the deploy)"]
        status_report(name="Status", specs=ctx.specs, mode=data.youtube_mode, title=title, extra=extra)
    elif action == "stop":
        stop_all(ctx)
    else:  # start, restart
        preflight(ctx, action, deployed_problems(ctx))
        if action == "restart":
            stop_all(ctx)
        run(ctx)
        health(ctx)


# (`ctx_host.isset()`: unit tests import this module's helpers outside a pyinfra run.)
if ctx_host.isset() and "youtube" in host.groups:
    main(host.data)
