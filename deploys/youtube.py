"""YouTube assistant production beside development, as the operator (no root).

    pyinfra inventory.py deploys/youtube.py                          # test hosts
    DEPLOY_ENV=prod pyinfra inventory.py deploys/youtube.py          # this machine (@local)
    ... --data youtube_action=start|stop|restart|status              # run control
    ... --data release_action=rollback [--data release_to=ID]        # make rollback
    ... --data release_action=releases                               # make releases

The plan (seed 003), phases 1 and 2, as one idempotent deploy on the machine that holds
the development checkout (`youtube_source_dir`), with safe updates (issue 14):

- build, beside the live release (deploys/parts/releases.py): the frontend's production
  build runs in a scratch copy (`youtube_build_dir`; dev's .next is never touched, and
  node_modules is reinstalled only when package*.json changed), then becomes
  `releases/frontend/<id>` (node_modules hard-linked, not copied). The backend becomes
  `releases/backend/<id>` (code, .env 0600, `venv-prod` -> a venv shared by releases with
  the same requirements, built once). Each release holds its `.infra-run` command.
  With lingering, both builds run as transient units of the user's systemd manager
  (deploys/parts/host_steps.py, scope "user"; `youtube_build_units`): a dropped SSH
  session or a killed pyinfra does not cut them short, and the next apply waits for an
  unfinished one, reports it and uses its result. Without lingering they run in the
  session (the deploy says so).
- switch: only the component whose release id changed is stopped, linked (`<prod>/backend`,
  `<prod>/frontend`), started and health-gated; the database is backed up first and
  migrated with Alembic. A failed pip install or build never reaches the switch; a failed
  migration, start or gate puts back the previous release and its database.
  With lingering the switch runs on the machine (`youtube_switch_on_host`):
  templates/opt/infra/bin/release-switch, installed in the user's state dir, as the
  transient unit `<prefix>-release.service` of the user's manager, so a killed pyinfra or
  a dropped SSH session neither leaves production stopped nor skips the rollback; the
  next apply waits for an unfinished switch before it plans. In PID-file mode the
  processes it starts get a scope of their own (`systemd-run --user --scope`): started in
  the switch's unit, they would share its cgroup and end with it. Without lingering the
  user manager ends with the last session (and its units with it): the same sequence
  runs from the controller, in the SSH session, as before.
- run: PID files (`pids/`, logs in the production directory, rotated at start) or systemd
  user units (`youtube_mode`, remembered in `<prod>/.mode`), see deploys/parts/procs.py.

A run that changes nothing touches nothing (0 changes). Development (8000/3000,
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
from pyinfra.api import FileUploadCommand, StringCommand, deploy, operation
from pyinfra.context import ctx_host
from pyinfra.facts.files import Sha256File
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from deploys import secrets as secret_store
from deploys.parts import deploy_lock
from deploys.errors import ConfigError, PreflightFailed
from deploys.operations import poll, wait_until
from deploys.parts import releases
from deploys.parts.host_steps import host_step, settled, wait_for_step
from deploys.parts.data_backup import (
    SQLITE_COPY_SCRIPT,
    newest_backup,
    prune_command,
    sqlite_backup,
    sqlite_copy_command,
    sqlite_restore,
)
from deploys.parts.python_env import venv_built
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
    start_command,
    start_now,
    status_report,
    stop_command,
    stop_now,
    user_units_removed,
    user_units_running,
    user_units_stopped,
)
from deploys.parts.service import render_env_file
from deploys.templating import render
from facts.procs import (
    USER_SYSTEMCTL,
    AlembicState,
    GitRevision,
    Identity,
    Interpreter,
    MissingCommands,
    MissingCommandsIn,
    MissingPaths,
    MissingPythonModules,
    TextFile,
    TreeDigest,
    UserManagerPath,
    UserUnits,
    at_head,
)

q = shlex.quote
ACTIONS = ("deploy", "start", "stop", "restart", "status")
RELEASE_ACTIONS = releases.RELEASE_ACTIONS
COMPONENTS = ["backend", "frontend"]
RUN_SCRIPT = ".infra-run"
PLACEHOLDERS = (
    "home", "prod_dir", "backend_dir", "frontend_dir", "venv", "db_path", "bind", "backend_port", "frontend_port",
)
UNIT_TEMPLATE = "home/.config/systemd/user/user-service.j2"
BACKEND_EXCLUDES = ["__pycache__", "*.pyc", ".env*", "*.db", "venv*", ".venv", ".pytest_cache", ".python-version"]


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
    # live links into releases/<component>/<id> (before releases: plain directories)
    backend = property(lambda self: f"{self.prod}/backend")
    frontend = property(lambda self: f"{self.prod}/frontend")
    venv = property(lambda self: f"{self.prod}/backend/venv-prod")
    venvs = property(lambda self: f"{self.prod}/venvs")
    shared = property(lambda self: f"{self.prod}/shared")
    db_path = property(lambda self: f"{self.prod}/shared/{self.db_name}")
    legacy_db = property(lambda self: f"{self.prod}/backend/{self.db_name}")
    pids = property(lambda self: f"{self.prod}/pids")
    backups = property(lambda self: f"{self.prod}/backups")
    mode_file = property(lambda self: f"{self.prod}/.mode")
    build_frontend = property(lambda self: f"{self.build_root}/frontend")
    build_stamp = property(lambda self: f"{self.build_root}/frontend.built")
    install_stamp = property(lambda self: f"{self.build_root}/frontend.installed")


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

    def proc(role: str, cwd: str) -> ProcSpec:
        port = int(data.get(f"youtube_{role}_port"))
        fill(data.get(f"youtube_{role}_cmd"), values, f"youtube_{role}_cmd")  # unknown placeholders fail here
        return ProcSpec(
            id=role,
            description=f"YouTube assistant production {role}",
            # the command lives in the release (run_script), so a rollback brings its command back
            command=f"sh ./{RUN_SCRIPT}",
            cwd=cwd,
            env_file=f"{cwd}/.env",
            log=f"{layout.prod}/{role}.log",
            pidfile=f"{layout.pids}/{role}.pid",
            port=port,
            family=f"{family}:{role}",
            unit=f"{prefix}-{role}.service",
            health_url=f"http://127.0.0.1:{port}{data.get(f'youtube_{role}_health_path')}",
            log_max_bytes=int(data.youtube_log_max_mb or 0) * 1024 * 1024,
        )

    return [proc("backend", layout.backend), proc("frontend", layout.frontend)]


def run_script(data, layout: Layout, role: str) -> str:
    """`<release>/.infra-run`: how this release's process runs (PATH additions, command)."""
    command = fill(data.get(f"youtube_{role}_cmd"), placeholders(data, layout), f"youtube_{role}_cmd")
    lines = ["#!/bin/sh", f"# Managed by infra (deploys/youtube.py): the {role} of this release."]
    if path := path_prepend(data, layout):
        lines.append(f'PATH={q(":".join(path))}:"$PATH"; export PATH')
    lines.append(f"exec {command}")
    return "\n".join(lines) + "\n"


def systemd_exec_quote(command: str) -> str:
    """One double-quoted ExecStart argument: systemd unescapes \\ and \", and would expand
    `$VAR` and `%x` itself, so those are doubled."""
    escaped = command.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def render_unit(spec: ProcSpec, data, after: tuple[str, ...] = ()) -> str:
    exec_line = f"exec {spec.command}"
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
        log_max_bytes=spec.log_max_bytes,
        rotate=systemd_exec_quote(
            f"[ $(stat -c %s {q(spec.log)} 2>/dev/null || echo 0) -le {spec.log_max_bytes} ] || mv -f {q(spec.log)} {q(spec.log + '.1')}"
        ),
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
    if data.get("release_action") not in (None, "", *RELEASE_ACTIONS):
        problems.append(f"release_action {data.get('release_action')!r} is not one of {', '.join(RELEASE_ACTIONS)}")
    if data.youtube_mode not in (None, "", *MODES):
        problems.append(f"youtube_mode {data.youtube_mode!r} is not one of {', '.join(MODES)} (or None: the recorded mode)")
    if not str(data.youtube_python or "").strip() or any(c.isspace() for c in str(data.youtube_python)):
        problems.append(f"youtube_python {data.youtube_python!r} must be 'auto' or an interpreter (name or path)")
    if not isinstance(data.youtube_python_min, str) or not all(x.isdigit() for x in data.youtube_python_min.split(".")):
        problems.append(f"youtube_python_min {data.youtube_python_min!r} must be a version like '3.11'")
    for key in ("youtube_keep_releases", "youtube_keep_backups", "youtube_build_timeout_s"):
        if not isinstance(data.get(key), int) or data.get(key) < 1:
            problems.append(f"{key} {data.get(key)!r} must be a whole number >= 1")
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
    script = str(data.youtube_switch_script or "")
    if not script.strip() or script.endswith("/") or any(c.isspace() for c in script):
        problems.append(f"youtube_switch_script {script!r} must be a file path without spaces (e.g. ~/.local/state/infra/bin/release-switch)")
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


# ----------------------------------------------------------------------------- builds


@operation()
def frontend_built(
    src: str,
    build_dir: str,
    stamp: str,
    wanted: str,
    install_stamp: str,
    install_wanted: str,
    excludes: list[str],
    install_cmd: str,
    build_cmd: str,
    env: dict,
    path: tuple = (),
    artifact: str = ".next",
    step=None,
):
    """The production build in a scratch copy of the frontend; nothing when the stamp
    (digest of sources, lockfile, commands and baked env) matches and the artifact exists.
    node_modules stays while package*.json and the install command are unchanged.
    `step(script) -> command`: the whole build as one host step (a transient user unit, see
    `build_step`), which first looks for a build an earlier, cut-off run finished."""
    current = host.get_fact(TextFile, path=stamp)
    if current == wanted and not host.get_fact(MissingPaths, paths=json.dumps([f"{build_dir}/{artifact}"])):
        host.noop(f"frontend build is current ({wanted[:12]})")
        return
    reinstall = host.get_fact(TextFile, path=install_stamp) != install_wanted or not install_cmd
    say(f"building the frontend ({'sources changed' if current else 'first build'}"
        f"{'' if reinstall else ', dependencies unchanged'}) in {build_dir}")
    commands = frontend_build_commands(src, build_dir, stamp, wanted, install_stamp, install_wanted, excludes,
                                       install_cmd, build_cmd, env, path, artifact, reinstall)
    if step is None:
        for command in commands:
            yield StringCommand(command)
        return
    yield step(resumable_build(commands, stamp, wanted, f"{build_dir}/{artifact}"))


def resumable_build(commands: list[str], stamp: str, wanted: str, target: str) -> str:
    """`commands` as one script that does nothing when an earlier (cut-off) run already
    built `wanted` (its stamp written, its artifact there)."""
    done = f"[ \"$(cat {q(stamp)} 2>/dev/null)\" = {q(wanted)} ] && [ -e {q(target)} ]"
    script = " && ".join(f"{{ {c}; }}" for c in commands)
    return f"if {done}; then echo 'the frontend build was finished by an earlier run (cut off before it saw the end)'; else {script}; fi"


def frontend_build_commands(src, build_dir, stamp, wanted, install_stamp, install_wanted, excludes, install_cmd,
                            build_cmd, env, path, artifact, reinstall: bool) -> list[str]:
    """The build's shell commands in order (not `reinstall`: node_modules is kept)."""
    ex = " ".join(f"--exclude={q(p)}" for p in excludes)
    keep = "" if reinstall else " ! -name node_modules"
    commands = [
        f"rm -f {q(stamp)} && mkdir -p {q(build_dir)} && find {q(build_dir)} -mindepth 1 -maxdepth 1{keep} -exec rm -rf {{}} + && "
        f"tar -C {q(src)} {ex} -cf - . | tar -C {q(build_dir)} -xf -"
    ]
    exports = " ".join(f"{k}={q(str(v))}" for k, v in sorted(env.items()))
    exports = f"export {exports} && " if exports else ""
    if path:
        exports += f'export PATH={q(":".join(path))}:"$PATH" && '
    steps = [("build", build_cmd)]
    if reinstall and install_cmd:
        steps.insert(0, ("install", install_cmd))
        commands.append(f"rm -f {q(install_stamp)}")
    for what, cmd in steps:
        if cmd:
            log = q(f"{build_dir}/.infra-{what}.log")
            commands.append(f"( cd {q(build_dir)} && {exports}{cmd} > {log} 2>&1 ) || "
                            f"{{ tail -n 40 {log} >&2; echo {q(f'frontend {what} failed: {cmd}')} >&2; exit 1; }}")
        if what == "install":
            commands.append(f"echo {q(install_wanted)} > {q(install_stamp)}")
    target = f"{build_dir}/{artifact}"
    commands.append(f"[ -e {q(target)} ] || {{ echo {q(f'the frontend build produced no {artifact} (youtube_frontend_artifact)')} >&2; exit 1; }}")
    commands.append(f"echo {q(wanted)} > {q(stamp)}")
    return commands


def copy_steps(src: str, names: list[str], excludes: list[str], hard_link: tuple[str, ...] = ()) -> list[str]:
    """Commands copying `names` (those that exist) from `src` into `{release}`; names in
    `hard_link` are hard-linked (no copy; safe while nothing rewrites them in place)."""
    ex = " ".join(f"--exclude={q(p)}" for p in excludes)
    steps = []
    for name in names:
        s = q(f"{src}/{name}")
        if name in hard_link:
            copy = f"{{ cp -al {s} {{release}}/ 2>/dev/null || cp -a {s} {{release}}/; }} && rm -rf {{release}}/{q(name)}/.cache"
        else:
            copy = f"tar -C {q(src)} {ex} -cf - {q(name)} | tar -C {{release}} -xf -"
        steps.append(f"if [ -e {s} ] || [ -L {s} ]; then {copy}; fi")
    return steps


# ----------------------------------------------------------------------------- data


def _sh(host_, command: str) -> tuple[bool, str]:
    return releases.run_command(host_, command, lines=30)


def data_steps(ctx: Context, migrate: bool, restore_for: str | None = None) -> releases.DataSteps:
    """Backup before every switch; migrations (deploy) or the matching backup (rollback)."""
    data, layout = ctx.data, ctx.layout
    db, backups, keep = layout.db_path, layout.backups, int(data.youtube_keep_backups)
    stem = PurePosixPath(db).stem

    def backup(host_, tag: str):
        return sqlite_backup(host_, db, backups, tag, keep)

    def restore(host_, path: str):
        return sqlite_restore(host_, db, path)

    def migrate_db(host_):
        cmd = fill(data.youtube_migrate_cmd, placeholders(data, layout), "youtube_migrate_cmd")
        ok, out = _sh(host_, f"cd {q(layout.backend)} && set -a && . ./.env && set +a && {cmd} 2>&1")
        return ok, ("database migrated" if ok else f"migration failed ({cmd}):\n{out}")

    def matching_backup(host_):
        st = host_.get_fact(AlembicState, backend_dir=layout.backend, python=f"{layout.venv}/bin/python", db_path=db)
        if at_head(st) or not st.get("db_exists"):
            return True, "the database already matches this release: kept as it is"
        found = newest_backup(host_, backups, f"{q(stem)}-*-{q(restore_for)}.db")
        if not found:
            return False, f"the database is at {st.get('current')} but no backup taken while {restore_for} was live is kept"
        ok, out = restore(host_, found)
        return ok, f"database restored from {found} (its state when {restore_for} was live)" if ok else out

    prepare = None
    if migrate:
        prepare = migrate_db
    elif restore_for:
        prepare = matching_backup
    return releases.DataSteps(backup=backup, restore=restore, prepare=prepare)


# ----------------------------------------------------------------------------- phases


@dataclass
class Context:
    data: object
    ident: dict
    layout: Layout
    specs: list[ProcSpec]
    mode: str = "pidfile"
    units_done: bool = False  # systemd mode: unit files already handled in this run


def resolve_mode(data, layout: Layout) -> str:
    """The mode asked for, else the one recorded on the machine, else PID files."""
    return data.youtube_mode or host.get_fact(TextFile, path=layout.mode_file) or "pidfile"


def version_tuple(text: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(text).split(".")[:3])
    except ValueError:
        return ()


def interpreter_problems(ctx: Context, interp: dict) -> list[str]:
    data = ctx.data
    need = version_tuple(data.youtube_python_min)
    if not interp.get("path"):
        return [f"youtube_python {interp.get('requested') or data.youtube_python!r} does not run: install it or set youtube_python"]
    problems = []
    if version_tuple(interp.get("version")) < need:
        problems.append(
            f"the backend needs Python {data.youtube_python_min}+ (datetime.UTC), but {interp['path']} is {interp['version']}: "
            "set youtube_python to a newer interpreter (or install the checkout's .python-version with pyenv)"
        )
    if interp.get("source") == "pyenv-missing":
        say(f"backend/.python-version asks for {interp.get('pinned')}, which pyenv does not have: using {interp['path']} ({interp['version']})")
    return problems


def manager_path_problems(ctx: Context) -> list[str]:
    """systemd mode: the user manager's PATH (not the login shell's) must find the commands."""
    manager_path = host.get_fact(UserManagerPath)
    if not manager_path:
        return []
    words = {first_word(fill(ctx.data.get(f"youtube_{r}_cmd"), placeholders(ctx.data, ctx.layout), r)) for r in COMPONENTS}
    words = sorted(w for w in words if w and "/" not in w)
    search = ":".join([*path_prepend(ctx.data, ctx.layout), manager_path])
    missing = host.get_fact(MissingCommandsIn, commands=" ".join(words), search_path=search)
    return [
        f"`{w}` is not on the systemd user manager's PATH ({manager_path}): user units would not find it; "
        "add its directory (e.g. nvm's node bin) to youtube_path_prepend"
        for w in missing
    ]


def preflight(ctx: Context, action: str, extra: list[str] | None = None) -> None:
    """Everything that would stop the run, checked before the first change; one message."""
    data, layout, mode = ctx.data, ctx.layout, ctx.mode
    problems = list(extra or [])
    if ctx.ident.get("uid") == 0:
        problems.append(
            "connected as root: the YouTube assistant runs as an ordinary user "
            "(set ssh_user to the operator, or run pyinfra @local as yourself)"
        )
    secrets = list(data.youtube_backend_secrets or []) if action == "deploy" else []
    problems += collect_problems(secrets=secrets, disk_paths=(layout.home,))
    if action in ("deploy", "start", "restart", "rollback"):
        info = processes(ctx.specs, mode)
        for spec in ctx.specs:
            if problem := port_problem(spec, info.get(spec.id, {})):
                problems.append(problem)
        if mode == "systemd" and data.youtube_linger and not ctx.ident.get("linger") and not data.youtube_linger_sudo:
            user = ctx.ident.get("user")
            problems.append(
                f"youtube_mode 'systemd' starts the units at boot/login through lingering, which is off for {user}: "
                f"run `loginctl enable-linger` in your desktop session (or `sudo loginctl enable-linger {user}`) once, "
                "or set youtube_linger_sudo = True to let the deploy run that one command with sudo "
                "(or youtube_linger = False: units start at login and stop at logout)"
            )
        if mode == "systemd" and not data.youtube_linger:
            manager = host.get_fact(UserUnits, units="default.target").get("manager")
            if manager in (None, "offline"):
                problems.append("no systemd user manager answers (no desktop session, lingering off): enable lingering")
        if mode == "systemd":
            problems += manager_path_problems(ctx)
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
        f"{layout.backend}/.complete",
        f"{layout.frontend}/.complete",
        f"{layout.venv}/bin/python",
        f"{layout.frontend}/{data.youtube_frontend_artifact}",
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


def units_installed(ctx: Context) -> None:
    """systemd mode: lingering, the unit files, daemon-reload (before any start)."""
    data, layout, specs = ctx.data, ctx.layout, ctx.specs
    if ctx.units_done:
        return
    ctx.units_done = True
    if data.youtube_linger:
        linger_enabled(name="Lingering enabled (units start at boot)", use_sudo=bool(data.youtube_linger_sudo))
    files.directory(name=f"{layout.unit_dir}", path=layout.unit_dir, present=True)
    changed = []
    for unit, text in unit_files(specs, data).items():
        changed.append(files.put(name=f"Unit {unit}", src=StringIO(text), dest=f"{layout.unit_dir}/{unit}", mode="644"))
    server.shell(
        name="Reload the systemd user manager",
        commands=[f"{USER_SYSTEMCTL} daemon-reload"],
        _if=any_changed(*changed),
    )


@deploy("Run production")
def run(ctx: Context):
    data, specs, layout = ctx.data, ctx.specs, ctx.layout
    if ctx.mode == "pidfile":
        user_units_removed(name="No systemd user units (PID-file mode)", specs=specs, unit_dir=layout.unit_dir)
        for spec in specs:
            pid_process_running(name=f"{spec.id} running (PID file)", spec=spec, start_timeout_s=data.youtube_start_timeout_s)
        return
    for spec in reversed(specs):
        pid_process_stopped(name=f"{spec.id}: no PID-file instance (systemd mode)", spec=spec, stop_timeout_s=data.youtube_stop_timeout_s)
    units_installed(ctx)
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


def switch_components(ctx: Context, rids: dict[str, str], start: bool) -> list[releases.Component]:
    """Each component with its process hooks (stop in any mode, start in ctx.mode, gate)."""
    data = ctx.data
    out = []
    for spec in ctx.specs:
        gate = None
        if start and spec.health_url:
            check = http_check(spec.health_url)
            gate = (lambda check: lambda host_: poll(check, float(data.health_timeout_s), 1))(check)
        out.append(releases.Component(
            name=spec.id,
            rid=rids[spec.id],
            stop=(lambda spec: lambda host_: stop_now(host_, spec, float(data.youtube_stop_timeout_s)))(spec),
            start=(lambda spec: lambda host_: start_now(host_, spec, ctx.mode, float(data.youtube_start_timeout_s)))(spec) if start else None,
            gate=gate,
        ))
    return out


# ----------------------------------------------------------------------------- switch on the host


SWITCH_UNIT = "release"  # <youtube_unit_prefix>-release.service, a unit of the user's manager


def switch_on_host(ctx: Context) -> releases.HostSwitch | None:
    """The host-side switch (youtube_switch_on_host): release-switch in a transient unit of
    the login user's systemd manager, so a killed pyinfra or a dropped SSH session neither
    leaves production stopped nor skips the rollback. Only with lingering (the manager
    otherwise ends with the last session and takes the unit along) and a manager that
    answers; None: the same sequence runs from the controller, in the SSH session."""
    data, layout = ctx.data, ctx.layout
    if not data.youtube_switch_on_host or not ctx.ident.get("linger"):
        return None
    if host.get_fact(UserUnits, units="default.target").get("manager") not in USER_MANAGER_UP:
        return None
    on_host = releases.HostSwitch(
        f"{data.youtube_unit_prefix}-{SWITCH_UNIT}", scope="user", log=f"{layout.prod}/release-switch.log",
        script=expand(data.youtube_switch_script, layout.home),
        # a start is awaited by the gate: the time to listen, then the health check's
        gate_timeout_s=float(data.youtube_start_timeout_s) + float(data.health_timeout_s), gate_interval_s=1,
    )
    try:
        host_step(on_host.unit, ["true"], scope="user", log=on_host.log)
    except ConfigError:  # a home path a unit's log file cannot take
        return None
    return on_host


def host_stop_command(spec: ProcSpec, stop_timeout_s: float) -> str:
    """`stop_now` as a command line: the PID-file instance and a running user unit."""
    unit = q(spec.unit)
    return (
        f"{stop_command(spec.marker('pidfile'), stop_timeout_s)} && rm -f {q(spec.pidfile)} && "
        f"s=$({USER_SYSTEMCTL} is-active {unit} 2>/dev/null); "
        f'case "$s" in active|activating|reloading) {USER_SYSTEMCTL} stop {unit} && echo "unit {spec.unit} stopped" ;; esac'
    )


# PID-file mode, after the start: wait until the port answers while the PID file's process
# lives (as start_now does from the controller); a process that exits (an import error, a
# crash at start-up) fails the start at once instead of after the whole gate timeout.
# argv: pidfile port timeout_s
STARTED_CHECK = (
    "import os, socket, sys, time\n"
    "pidfile, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
    "start = time.monotonic()\n"
    "def pid():\n"
    "    try:\n"
    "        return int(open(pidfile).read().strip())\n"
    "    except (OSError, ValueError):\n"
    "        return None\n"
    "def alive(p):\n"
    "    try:\n"
    "        return open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z'\n"
    "    except (OSError, IndexError):\n"
    "        return False\n"
    "while True:\n"
    "    p = pid()\n"
    "    if p is not None and not alive(p):\n"
    "        sys.exit('the process exited right after it was started')\n"
    "    if p is None and time.monotonic() - start > 10:\n"
    "        sys.exit('no process appeared (the PID file was never written)')\n"
    "    if p is not None:\n"
    "        try:\n"
    "            socket.create_connection(('127.0.0.1', port), timeout=1).close()\n"
    "            print(f'pid {p} listening on {port}')\n"
    "            sys.exit(0)\n"
    "        except OSError:\n"
    "            pass\n"
    "    if time.monotonic() - start >= timeout:\n"
    "        sys.exit(f'pid {p} not listening on {port} after {timeout:g}s')\n"
    "    time.sleep(0.3)\n"
)


def host_start_command(spec: ProcSpec, mode: str, prefix: str, start_timeout_s: float) -> str:
    """`start_now` as a command line (the gate then waits for it to answer). PID-file mode:
    the process is started in a scope of its own (`systemd-run --user --scope`), not in
    the switch's unit, whose end would otherwise take it along (same cgroup); the scope
    belongs to the user's manager as the units of systemd mode do (lingering keeps it).
    Then STARTED_CHECK waits for the port; on failure the log's last lines follow."""
    if mode != "pidfile":
        return f"{USER_SYSTEMCTL} reset-failed {q(spec.unit)} 2>/dev/null; {USER_SYSTEMCTL} start {q(spec.unit)}"
    scope = f"{prefix}-{spec.id}-pid-$(date +%Y%m%d%H%M%S)-$$"
    runtime = 'XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"'
    started = f"{runtime} systemd-run --user --scope --quiet --collect --unit=\"{scope}\" " \
              f"--description={q(spec.description + ' (PID file)')} -- sh -c {q(start_command(spec))}"
    if spec.port is None:
        return started
    wait = f"python3 -c {q(STARTED_CHECK)} {q(spec.pidfile)} {int(spec.port)} {float(start_timeout_s):g}"
    return (f"{started} && {{ {wait} 2>&1 || {{ echo 'last lines of {spec.log}:'; "
            f"tail -n 15 {q(spec.log)} 2>/dev/null; exit 1; }}; }}")


def host_switch_components(ctx: Context, rids: dict[str, str], start: bool, script: str) -> list[releases.Component]:
    """`switch_components` as command lines (release-switch runs them on the host)."""
    data, out = ctx.data, []
    for spec in ctx.specs:
        report = f"echo 'last lines of {spec.log}:'; tail -n 15 {q(spec.log)} 2>/dev/null"
        if ctx.mode == "systemd":
            report += f"; {USER_SYSTEMCTL} status --no-pager -n 0 {q(spec.unit)} 2>&1 | head -n 5"
        out.append(releases.Component(
            name=spec.id, rid=rids[spec.id],
            stop=host_stop_command(spec, float(data.youtube_stop_timeout_s)),
            start=host_start_command(spec, ctx.mode, data.youtube_unit_prefix, float(data.youtube_start_timeout_s))
            if start else None,
            gate=f"python3 {q(script)} http-check {q(spec.health_url)}" if start and spec.health_url else None,
            report=report,
        ))
    return out


# decides from the AlembicState fact's JSON line (stdin) as `at_head` does: exit 0 when the
# database matches the release (at its heads) or there is none
AT_HEAD_CHECK = (
    "import json, sys\n"
    "lines = [l for l in sys.stdin.read().splitlines() if l.startswith('{')]\n"
    "s = json.loads(lines[-1]) if lines else {}\n"
    "h = s.get('heads')\n"
    "sys.exit(0 if not s.get('db_exists') or (h is not None and sorted(s.get('current') or []) == sorted(h)) else 1)\n"
)


def host_data_steps(ctx: Context, migrate: bool, restore_for: str | None = None) -> releases.HostData:
    """`data_steps` as command lines: the backup is tagged with $RELEASE_TAG, a failed switch
    restores $RELEASE_BACKUP; a rollback decides on the host whether the database matches
    the release it goes back to (its Alembic heads) and else restores the backup taken
    while that release was live."""
    data, layout = ctx.data, ctx.layout
    db, backups, keep = layout.db_path, layout.backups, int(data.youtube_keep_backups)
    stem = PurePosixPath(db).stem
    backup = (
        f"[ -f {q(db)} ] || {{ echo none; exit 0; }}; mkdir -p {q(backups)} && chmod 700 {q(backups)} && "
        f"dest={q(f'{backups}/{stem}-')}\"$(date +%Y%m%dT%H%M%S)-$RELEASE_TAG.db\" && "
        f"(umask 077 && python3 -c {q(SQLITE_COPY_SCRIPT)} {q(db)} \"$dest\") && "
        f"{prune_command(backups, q(stem) + '-*.db', keep)} && echo \"$dest\""
    )

    def restore(path: str) -> str:
        return (f"rm -f {q(db)}-journal {q(db)}-wal {q(db)}-shm && cp -p {path} {q(db + '.restore')} && "
                f"mv -f {q(db + '.restore')} {q(db)}")

    prepare = ""
    if migrate:
        cmd = fill(data.youtube_migrate_cmd, placeholders(data, layout), "youtube_migrate_cmd")
        prepare = (f"cd {q(layout.backend)} && set -a && . ./.env && set +a && {{ {cmd} 2>&1 || "
                   f"{{ echo {q(f'migration failed ({cmd})')}; exit 1; }}; }} && echo 'database migrated'")
    elif restore_for:
        state = AlembicState().command(backend_dir=layout.backend, python=f"{layout.venv}/bin/python", db_path=db)
        found = f"{q(backups)}/{q(stem)}-*-{q(restore_for)}.db"
        prepare = (
            f"if ( {state} ) | python3 -c {q(AT_HEAD_CHECK)}; then "
            "echo 'the database already matches this release: kept as it is'; "
            f'else found=$(ls -1t {found} 2>/dev/null | head -n 1); if [ -z "$found" ]; then '
            f"echo {q(f'no backup taken while {restore_for} was live is kept, and the database does not match it')}; exit 1; fi; "
            f'{restore(chr(34) + "$found" + chr(34))} && echo "database restored from $found (its state when {restore_for} was live)"; fi'
        )
    return releases.HostData(backup=backup, restore=restore('"$RELEASE_BACKUP"'), prepare=prepare)


def switched(ctx: Context, name: str, rids: dict[str, str], start: bool, action: str, meta: dict,
             migrate: bool = False, restore_for: str | None = None, cleanup: bool = False) -> None:
    """Make `rids` live: on the host (switch_on_host) or, without it, from the controller."""
    data, layout = ctx.data, ctx.layout
    keep = int(data.youtube_keep_releases)
    live = releases.current_components(releases.read(layout.prod, COMPONENTS), COMPONENTS)
    switching = any(live.get(c) != rid for c, rid in rids.items())
    if on_host := switch_on_host(ctx):
        if switching:  # (a run with nothing to switch changes nothing)
            releases.user_switch_script(path=on_host.script)
        releases.releases_switched_on_host(
            name=name, root=layout.prod, names=COMPONENTS, on_host=on_host,
            components=host_switch_components(ctx, rids, start, on_host.script),
            data=host_data_steps(ctx, migrate, restore_for), switch=releases.Switch(action, meta), keep=keep,
            cleanup=venv_cleanup_command(layout) if cleanup else "",
        )
        return
    if data.youtube_switch_on_host and switching:
        host.log("the release switch runs from here, in this SSH session (lingering is off): "
                 "a dropped session stops it half-way; the next apply rolls back or finishes it")
    releases.releases_switched(
        name=name, root=layout.prod, names=COMPONENTS,
        components=switch_components(ctx, rids, start),
        data=data_steps(ctx, migrate=migrate, restore_for=restore_for),
        switch=releases.Switch(action, meta), keep=keep, cleanup=venv_cleanup(layout) if cleanup else None,
    )


def legacy_adopted(ctx: Context, st: dict) -> None:
    """An install from before releases (plain backend/ and frontend/ directories): stop it,
    move its database to shared/ and keep the old directories under releases/<c>/legacy-*."""
    legacy = [c for c in COMPONENTS if (st["components"].get(c) or {}).get("legacy_dir")]
    if not legacy:
        return
    layout = ctx.layout
    host.log(f"adopting the install from before releases ({', '.join(legacy)}): stopped once, database moved to {layout.shared}")
    stop_all(ctx)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moves = [
        f"if [ -f {q(layout.legacy_db)} ] && [ ! -e {q(layout.db_path)} ]; then mv {q(layout.legacy_db)} {q(layout.db_path)}; fi",
        f"rm -f {q(layout.prod + '/.release')}",  # the old single-release marker
    ]
    for c in legacy:
        moves.append(f"mkdir -p {q(f'{layout.prod}/releases/{c}')} && mv -T {q(f'{layout.prod}/{c}')} {q(f'{layout.prod}/releases/{c}/legacy-{stamp}')}")
    server.shell(name="Install from before releases adopted", commands=moves)


def release_ids(ctx: Context) -> dict:
    """Everything a deploy would build, as release ids (all read now; one pass of facts)."""
    data, layout = ctx.data, ctx.layout
    values = placeholders(data, layout)
    path = path_prepend(data, layout)
    src_backend = host.get_fact(
        TreeDigest, base=layout.src_backend, includes=json.dumps(data.youtube_backend_paths),
        excludes=json.dumps(BACKEND_EXCLUDES),
    )
    src_frontend = host.get_fact(
        TreeDigest, base=layout.src_frontend, includes="[]", excludes=json.dumps(data.youtube_frontend_excludes),
    )
    lock = host.get_fact(
        TreeDigest, base=layout.src_frontend, includes=json.dumps(["package.json", "package-lock.json"]), excludes="[]",
    )
    fe_env = frontend_env(data, layout)
    install_cmd = fill(data.youtube_frontend_install_cmd or "", values, "youtube_frontend_install_cmd")
    build_cmd = fill(data.youtube_frontend_build_cmd or "", values, "youtube_frontend_build_cmd")
    install_wanted = digest("install", lock.get("digest"), install_cmd, path)
    build_wanted = digest("frontend", src_frontend.get("digest"), install_wanted, build_cmd, fe_env, path, data.youtube_frontend_excludes)
    interp = host.get_fact(Interpreter, wanted=str(data.youtube_python), app_dir=layout.src_backend)
    requirements = f"{layout.src_backend}/{data.youtube_backend_requirements}"
    pip_args = [fill(a, values, "youtube_pip_args") for a in data.youtube_pip_args or []]
    venv_id = releases.release_id("venv", host.get_fact(Sha256File, path=requirements), pip_args, interp.get("path"), interp.get("version"))
    secret_values = secret_store.get(list(data.youtube_backend_secrets or []))
    be_env_file = render_env_file(backend_env(data, layout, secret_values))
    fe_env_file = render_env_file(fe_env)
    backend_run, frontend_run = run_script(data, layout, "backend"), run_script(data, layout, "frontend")
    return {
        "interp": interp, "requirements": requirements, "pip_args": pip_args, "venv_id": venv_id,
        "install_cmd": install_cmd, "build_cmd": build_cmd, "install_wanted": install_wanted,
        "build_wanted": build_wanted, "fe_env": fe_env, "path": path,
        "backend_env_file": be_env_file, "frontend_env_file": fe_env_file,
        "backend_run": backend_run, "frontend_run": frontend_run,
        "backend": releases.release_id(
            "backend", src_backend.get("digest"), data.youtube_backend_paths, venv_id,
            sha256_text(be_env_file.unmask()), backend_run,
        ),
        "frontend": releases.release_id(
            "frontend", build_wanted, data.youtube_frontend_paths, sha256_text(fe_env_file.unmask()), frontend_run,
        ),
    }


def release_meta(ctx: Context) -> dict:
    rev = host.get_fact(GitRevision, repo=ctx.layout.source)
    return {"commit": rev.get("commit"), "dirty": rev.get("dirty"), "by": f"{ctx.ident.get('user')}@{host.name.lstrip('@')}", "mode": ctx.mode}


def mode_recorded(ctx: Context) -> None:
    files.put(name=f"Run mode recorded ({ctx.mode})", src=StringIO(ctx.mode + "\n"), dest=ctx.layout.mode_file, mode="600")


def deploy_all(ctx: Context) -> None:
    data, layout = ctx.data, ctx.layout
    ids = release_ids(ctx)
    st = releases.read(layout.prod, COMPONENTS)
    built = {c: ((st["components"].get(c) or {}).get("releases", {}).get(ids[c]) or {}).get("complete") for c in COMPONENTS}
    venv = f"{layout.venvs}/{ids['venv_id']}"
    venv_pending = not built["backend"] and bool(host.get_fact(MissingPaths, paths=json.dumps([f"{venv}/.complete"])))
    problems = source_problems(ctx) + command_problems(ctx, venv_pending)
    if venv_pending:
        problems += interpreter_problems(ctx, ids["interp"])
    preflight(ctx, "deploy", problems)

    steps = build_steps(ctx)
    for what in steps:  # a build a cut-off run left going ends before this run touches its files
        wait_for_step(name=f"{steps[what][0]}.service: wait for an unfinished build", unit=steps[what][0],
                      scope="user", log=steps[what][1])
    for path_, mode in ((layout.prod, "700"), (layout.pids, "700"), (layout.backups, "700"),
                        (layout.shared, "700"), (layout.venvs, "700"), (layout.build_root, "700")):
        files.directory(name=f"{path_}", path=path_, present=True, mode=mode)
    mode_recorded(ctx)
    meta = release_meta(ctx)
    if not steps and not (built["frontend"] and built["backend"]):
        host.log("the builds run in this SSH session (lingering is off, or youtube_build_units = False): "
                 "a dropped session cuts them short and the next apply builds again")

    if not built["frontend"]:
        frontend_built(
            name="Frontend production build",
            src=layout.src_frontend, build_dir=layout.build_frontend, stamp=layout.build_stamp, wanted=ids["build_wanted"],
            install_stamp=layout.install_stamp, install_wanted=ids["install_wanted"],
            excludes=list(data.youtube_frontend_excludes or []), install_cmd=ids["install_cmd"], build_cmd=ids["build_cmd"],
            env=ids["fe_env"], path=ids["path"], artifact=data.youtube_frontend_artifact,
            step=build_step(ctx, steps, "frontend-build"),
        )
        releases.release_built(
            name="Frontend release built",
            root=layout.prod, component="frontend", rid=ids["frontend"], meta=meta,
            build=[
                *copy_steps(layout.build_frontend, list(data.youtube_frontend_paths), [], hard_link=("node_modules",)),
                f"[ -e {{release}}/{q(data.youtube_frontend_artifact)} ] || {{ echo 'frontend release lacks {data.youtube_frontend_artifact}' >&2; exit 1; }}",
                *release_files(layout, "frontend", ids["frontend"], ids["frontend_env_file"], ids["frontend_run"]),
            ],
        )
    if not built["backend"]:
        venv_built(
            name="Backend venv (runtime requirements)",
            venv=venv, python=ids["interp"].get("path") or "python3", requirements=ids["requirements"], pip_args=ids["pip_args"],
            step=build_step(ctx, steps, "venv-build"),
        )
        releases.release_built(
            name="Backend release built",
            root=layout.prod, component="backend", rid=ids["backend"], meta={**meta, "venv": ids["venv_id"]},
            build=[
                *copy_steps(layout.src_backend, list(data.youtube_backend_paths), BACKEND_EXCLUDES),
                f"ln -sfn {q('../../../venvs/' + ids['venv_id'])} {{release}}/venv-prod",
                *release_files(layout, "backend", ids["backend"], ids["backend_env_file"], ids["backend_run"]),
            ],
        )
    legacy_adopted(ctx, st)
    if ctx.mode == "systemd":
        units_installed(ctx)
    current = releases.current_components(st, COMPONENTS)
    start = bool(data.youtube_start_after_deploy)
    switched(ctx, "Release switched (only what changed restarts; rolled back on failure)",
             {c: ids[c] for c in COMPONENTS}, start, "deploy", meta,
             migrate=current.get("backend") != ids["backend"], cleanup=True)
    migrated(ctx)
    if start:
        run(ctx)
        health(ctx)


BUILDS = ("frontend-build", "venv-build")
USER_MANAGER_UP = ("running", "degraded", "starting")


def build_steps(ctx: Context) -> dict[str, tuple[str, str]]:
    """{build: (unit, log file)} when the long builds run as transient units of the user's
    systemd manager (deploys/parts/host_steps.py, scope "user"): only with lingering, as the
    manager otherwise ends with the last session and takes its units along. Empty: the
    builds run in the SSH session (also for a home path a unit's log file cannot take)."""
    data, layout = ctx.data, ctx.layout
    if not data.youtube_build_units or not ctx.ident.get("linger"):
        return {}
    if host.get_fact(UserUnits, units="default.target").get("manager") not in USER_MANAGER_UP:
        return {}
    steps = {what: (f"{data.youtube_unit_prefix}-{what}", f"{layout.prod}/{what}.log") for what in BUILDS}
    try:
        for unit, log in steps.values():
            host_step(unit, ["true"], scope="user", log=log)
    except ConfigError:
        return {}
    return steps


def build_step(ctx: Context, steps: dict, what: str):
    """`step(script) -> command` for frontend_built / venv_built, or None (foreground)."""
    if what not in steps:
        return None
    unit, log = steps[what]
    return lambda script: host_step(unit, ["sh", "-c", script], f"YouTube assistant production {what} (deploys/youtube.py)",
                                    timeout_s=int(ctx.data.youtube_build_timeout_s), scope="user", log=log)


def release_files(layout: Layout, role: str, rid: str, env_file, run_text: str) -> list:
    """.env (0600, uploaded) and .infra-run of a release."""
    path = releases.release_path(layout.prod, role, rid)
    return [
        f"install -m 600 /dev/null {q(path + '/.env')}",
        FileUploadCommand(StringIO(env_file.unmask()), f"{path}/.env"),
        FileUploadCommand(StringIO(run_text), f"{path}/{RUN_SCRIPT}"),
        f"chmod 700 {q(path + '/' + RUN_SCRIPT)}",
    ]


def venv_cleanup_command(layout: Layout) -> str:
    """Venvs no kept backend release links to are deleted after a switch."""
    return (
        f"cd {q(layout.venvs)} 2>/dev/null || exit 0; used=$(for r in ../releases/backend/*/venv-prod; do "
        "[ -L \"$r\" ] && basename \"$(readlink \"$r\")\"; done); "
        "for v in *; do [ -d \"$v\" ] || continue; echo \"$used\" | grep -qx \"$v\" || { rm -rf \"$v\" \"$v.log\"; echo \"removed venv $v\"; }; done; true"
    )


def venv_cleanup(layout: Layout):
    def cleanup(host_):
        return _sh(host_, venv_cleanup_command(layout))
    return cleanup


@operation()
def database_at_head(backend_dir: str, python: str, db_path: str, env_file: str, migrate_cmd: str, backups: str):
    """The live backend's database at its migration heads (e.g. after the database was
    replaced by hand); normally the switch already migrated it and this is a no-op."""
    st = host.get_fact(AlembicState, backend_dir=backend_dir, python=python, db_path=db_path)
    if at_head(st) is not False:
        host.noop(f"database at head {', '.join(st.get('heads') or [])}")
        return
    say(f"migrating {db_path} from {', '.join(st.get('current') or []) or 'new'} to {', '.join(st.get('heads') or [])}")
    if st.get("db_exists"):
        dest = f"{backups}/{PurePosixPath(db_path).stem}-{time.strftime('%Y%m%dT%H%M%S')}-premigrate.db"
        yield StringCommand(sqlite_copy_command(db_path, dest))
    yield StringCommand(
        f"cd {q(backend_dir)} && set -a && . {q(env_file)} && set +a && {migrate_cmd} "
        f"|| {{ echo {q('alembic migration failed (the backup is in ' + backups + ')')} >&2; exit 1; }}"
    )


def migrated(ctx: Context) -> None:
    layout = ctx.layout
    database_at_head(
        name="Database at the release's migration head",
        backend_dir=layout.backend, python=f"{layout.venv}/bin/python", db_path=layout.db_path,
        env_file=f"{layout.backend}/.env", backups=layout.backups,
        migrate_cmd=fill(ctx.data.youtube_migrate_cmd, placeholders(ctx.data, layout), "youtube_migrate_cmd"),
    )


def rollback(ctx: Context, target: dict) -> None:
    """`make rollback [TO=id]`: the previous (or the named) kept release, with its data."""
    layout = ctx.layout
    st = releases.read(layout.prod, COMPONENTS)
    preflight(ctx, "rollback")
    host.log(f"rolling back to release {target['id']} (deployed {target.get('at')}, commit {(target.get('commit') or '?')[:12]})")
    mode_recorded(ctx)
    if ctx.mode == "systemd":
        units_installed(ctx)
    meta = {**release_meta(ctx), "commit": target.get("commit"), "dirty": target.get("dirty")}
    current = releases.current_components(st, COMPONENTS)
    restore_for = target["id"] if current.get("backend") != target["components"].get("backend") else None
    switched(ctx, f"Rolled back to release {target['id']}", target["components"], True, "rollback", meta,
             restore_for=restore_for)
    run(ctx)
    health(ctx)


def status_lines(ctx: Context) -> list[str]:
    st = releases.read(ctx.layout.prod, COMPONENTS)
    current = releases.current_components(st, COMPONENTS)
    if not any(current.values()):
        return ["  not deployed yet (run the deploy)"]
    live = releases.app_id(current)
    entry = next((e for e in releases.history_entries(st) if e["id"] == live), None) or releases.unrecorded_live(st, COMPONENTS) or {}
    commit = (entry.get("commit") or "unknown")[:12] + (" (dirty: uncommitted changes were deployed)" if entry.get("dirty") else "")
    return [
        f"  release {live}: backend {current.get('backend')}, frontend {current.get('frontend')}",
        f"  deployed {entry.get('at', '?')} by {entry.get('by', '?')} ({entry.get('action', '?')}), commit {commit}",
    ]


def main(data) -> None:
    check_config(data)
    ident = host.get_fact(Identity)
    if not ident.get("home"):
        raise PreflightFailed(f"preflight failed on {host.name}: the login user has no HOME")
    layout = Layout.from_data(data, ident["home"])
    ctx = Context(data, ident, layout, proc_specs(data, layout))
    ctx.mode = resolve_mode(data, layout)
    if on_host := switch_on_host(ctx):  # a switch an earlier apply left running: plan from what it leaves
        settled(on_host.unit, scope="user", log=on_host.log)
    series = [releases.Series("", layout.prod, tuple(COMPONENTS))]
    if releases.release_action(data.get("release_action"), series, data.get("release_to"), lambda _, target: rollback(ctx, target)):
        return
    action = data.youtube_action
    title = (
        f"YouTube assistant production in {layout.prod} (mode {ctx.mode}; "
        f"backend :{data.youtube_backend_port}, frontend :{data.youtube_frontend_port})"
    )
    if action == "deploy":
        deploy_all(ctx)
    elif action == "status":
        status_report(name="Status", specs=ctx.specs, mode=ctx.mode, title=title, extra=status_lines(ctx))
    elif action == "stop":
        stop_all(ctx)
    else:  # start, restart
        preflight(ctx, action, deployed_problems(ctx))
        mode_recorded(ctx)
        if action == "restart":
            stop_all(ctx)
        run(ctx)
        health(ctx)


# (`ctx_host.isset()`: unit tests import this module's helpers outside a pyinfra run.)
if ctx_host.isset() and "youtube" in host.groups:
    deploy_lock.guarded("youtube", main, host.data)  # one run at a time on this host, and its record
