"""Process control for an ordinary user, without root: PID files or systemd user units.

A process is described by a `ProcSpec` (command, working directory, env file, log, PID
file, port, unit name). Every instance is started with `INFRA_PROC=<marker>` in its
environment, so the facts in facts/procs.py recognise it by /proc/<pid>/environ: a PID
file whose PID now belongs to another program is told apart from ours, and an instance
whose PID file was deleted is still found (and adopted, never duplicated).

Operations (each yields nothing when the host is already right, so re-runs report 0
changes) and what they answer:

- `pid_process_running`: already running -> no change; PID file missing -> re-written
  for the live instance (adopted); stale PID file (process gone, or PID reused by another
  program, which is never signalled) -> removed, then started; port held by a foreign
  process -> fails naming it. Waits (bounded) until the port listens, else fails with the
  log's last lines.
- `pid_process_stopped`: SIGTERM to the instance's process group, wait, SIGKILL after
  the timeout; cleans stale PID files; "not running" -> no change.
- `user_units_running` / `user_units_stopped` / `user_units_removed`: the same contract
  with systemd user units (Restart=always by default: npm exits 0 on SIGTERM, and a
  production server must come back; enabled for default.target).
- `linger_enabled`: logind lingering (units start at boot, keep running after logout).
- `status_report`: logs state, PIDs, ports and health; changes nothing.
- `stop_now` / `start_now`: the same, as hooks for deploys/parts/releases.py's switch.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.context import state
from pyinfra.facts.files import File

from deploys.operations import lines_logged
from facts.http import HttpHealth, describe as describe_http
from facts.procs import (
    MARKER_KEY,
    USER_SYSTEMCTL,
    Identity,
    ManagedProcesses,
    UserUnits,
    procs_spec,
)

q = shlex.quote
MODES = ("pidfile", "systemd")


@dataclass(frozen=True)
class ProcSpec:
    """One long-running process of an instance. `family` is the marker prefix shared by
    both modes (pidfile/systemd) of the same instance and process."""

    id: str
    command: str
    cwd: str
    log: str
    pidfile: str
    family: str
    unit: str
    port: int | None = None
    env_file: str | None = None
    health_url: str | None = None
    path_prepend: tuple = ()
    description: str = ""
    env: dict = field(default_factory=dict)  # extra, non-secret environment
    log_max_bytes: int = 0  # PID-file mode: a bigger log is rotated to <log>.1 at start (0: never)

    def marker(self, mode: str) -> str:
        return f"{self.family}:{mode}"

    def fact_entry(self, mode: str) -> dict:
        return {
            "id": self.id,
            "marker": self.marker(mode),
            "pidfile": self.pidfile if mode == "pidfile" else None,
            "port": self.port,
            "family": self.family + ":",
        }


# ----------------------------------------------------------------------------- helpers


def say(message: str) -> None:
    """Visible at execution (the operator's answer), quiet while planning."""
    if state.is_executing:
        host.log(message)
    else:
        host.noop(message)


def fail(message: str, log: str | None = None, lines: int = 30) -> StringCommand:
    """A command that fails the operation with `message` (and the log's last lines)."""
    tail = f"if [ -f {q(log)} ]; then echo '--- last {lines} lines of {log} ---' >&2; tail -n {lines} {q(log)} >&2; fi; " if log else ""
    return StringCommand(f"{tail}echo {q(message)} >&2; exit 1")


def _run_reporting(state, host, command: str, prefix: str) -> bool:
    """Run `command`; log its stdout lines (the operator's answer), print stderr on failure."""
    ok, output = host.run_shell_command(StringCommand(command))
    for line in output.stdout_lines:
        host.log(f"{prefix}{line}")
    if not ok:
        for line in output.stderr_lines:
            host.log(f"{prefix}{line}")
    return ok


def reporting(command: str, prefix: str) -> FunctionCommand:
    """A command whose output is shown (pyinfra hides a successful command's output)."""
    return FunctionCommand(_run_reporting, (command, prefix), {})


def processes(specs: list[ProcSpec], mode: str) -> dict[str, dict]:
    return host.get_fact(ManagedProcesses, spec=procs_spec([s.fact_entry(mode) for s in specs]))


def env_prefix(spec: ProcSpec, marker: str) -> str:
    """Assignments in front of the command: marker, extra env, PATH additions."""
    parts = [f"{MARKER_KEY}={q(marker)}"]
    parts += [f"{k}={q(str(v))}" for k, v in sorted(spec.env.items())]
    if spec.path_prepend:
        parts.append(f'PATH={q(":".join(spec.path_prepend))}:"$PATH"')
    return " ".join(parts)


def start_command(spec: ProcSpec) -> str:
    """Start in the background, detached (own session), PID written by the process itself.

    `sh -c 'echo $$ > PIDFILE && exec CMD'` under setsid: the PID in the file is the
    command's own PID (exec keeps it) and the leader of its process group, so stop can
    signal the whole tree (npm -> node). The env file is sourced with `set -a` (it is
    written with shell-safe quoting); output is appended to the log (0600 via umask).
    """
    inner = f"echo $$ > {q(spec.pidfile)} && exec {spec.command}"
    load_env = f"set -a && . {q(spec.env_file)} && set +a && " if spec.env_file else ""
    rotate = ""
    if spec.log_max_bytes:
        log = q(spec.log)
        rotate = f"{{ [ \"$(stat -c %s {log} 2>/dev/null || echo 0)\" -le {int(spec.log_max_bytes)} ] || mv -f {log} {log}.1; }} && "
    return (
        f"cd {q(spec.cwd)} && umask 077 && mkdir -p {q(spec.pidfile.rsplit('/', 1)[0])} && {rotate}{load_env}"
        f"{{ {env_prefix(spec, spec.marker('pidfile'))} nohup setsid sh -c {q(inner)} "
        f">> {q(spec.log)} 2>&1 < /dev/null & }}"
    )


# Runs on the host: python3 -c STOP_SCRIPT KEY MARKER TIMEOUT. Signals only processes that
# carry KEY=MARKER in their environment (checked right before each signal).
STOP_SCRIPT = r"""
import os, signal, sys, time
key, marker, timeout = (sys.argv[1] + "=").encode(), sys.argv[2].encode(), float(sys.argv[3])
def read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None
def alive(pid):
    raw = read("/proc/%d/stat" % pid)
    return raw is not None and raw[raw.rfind(b")") + 2:].split()[0] not in (b"Z", b"X")
def marked():
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            env = read("/proc/%s/environ" % name) or b""
            if key + marker in env.split(b"\0") and alive(int(name)):
                found.append(int(name))
    return found
def send(sig):
    pids = marked()
    for pid in pids:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except OSError:
            pass
    return pids
first = send(signal.SIGTERM)
if not first:
    print("not running")
    sys.exit(0)
start = time.monotonic()
while marked() and time.monotonic() - start < timeout:
    time.sleep(0.1)
if not marked():
    print("stopped pid %s with SIGTERM in %.1fs" % (min(first), time.monotonic() - start))
    sys.exit(0)
send(signal.SIGKILL)
deadline = time.monotonic() + 5
while marked() and time.monotonic() < deadline:
    time.sleep(0.1)
if marked():
    print("pids %s survived SIGKILL" % marked(), file=sys.stderr)
    sys.exit(1)
print("pid %s ignored SIGTERM for %gs: killed with SIGKILL" % (min(first), timeout))
""".strip()


def stop_command(marker: str, timeout_s: float) -> str:
    return f"python3 -c {q(STOP_SCRIPT)} {q(MARKER_KEY)} {q(marker)} {q(str(float(timeout_s)))}"


def foreign_holders(info: dict, family: str) -> list[dict]:
    """Listeners on the process's port that are not this instance (any mode)."""
    port = info.get("port") or {}
    holders = port.get("holders") or []
    foreign = [h for h in holders if not (h.get("marker") or "").startswith(family + ":")]
    if port.get("listening") and not holders:
        return [{"pid": None, "cmdline": "a process of another user (not visible)"}]
    return foreign


def port_problem(spec: ProcSpec, info: dict) -> str | None:
    foreign = foreign_holders(info, spec.family)
    if not foreign:
        return None
    who = ", ".join(f"{h['cmdline'] or '?'}" + (f" (pid {h['pid']})" if h.get("pid") else "") for h in foreign)
    return f"port {spec.port} ({spec.id}) is in use by {who}, not by this instance: stop it or choose another port"


def plan_start(info: dict) -> tuple[str, list[str]]:
    """('noop' | 'adopt' | 'start', messages) for a PID-file process, from its fact."""
    st, fpid, tops = info.get("state"), info.get("pidfile_pid"), info.get("tops") or []
    if st == "running":
        return "noop", [f"already running (pid {fpid}); not started again"]
    messages = []
    if st == "stale":
        messages.append(f"stale PID file (pid {fpid if fpid is not None else '?'} is gone): removed")
    elif st == "reused":
        messages.append(
            f"stale PID file: pid {fpid} now belongs to another program ({info.get('pidfile_cmdline') or '?'}),"
            " which is left alone; PID file removed"
        )
    if tops:
        if st == "missing-pidfile":
            messages.append(f"running (pid {min(tops)}) without its PID file: PID file restored, not started again")
        else:
            messages.append(f"running (pid {min(tops)}): PID file now names it, not started again")
        return "adopt", messages
    return "start", messages


def plan_stop(info: dict) -> tuple[bool, bool, list[str]]:
    """(signal the instance?, remove the PID file?, messages) for a PID-file process."""
    st, fpid, tops = info.get("state"), info.get("pidfile_pid"), info.get("tops") or []
    messages = []
    if st == "stale":
        messages.append(f"stale PID file (pid {fpid if fpid is not None else '?'} is gone): removed")
    elif st == "reused":
        messages.append(
            f"stale PID file: pid {fpid} belongs to another program ({info.get('pidfile_cmdline') or '?'}),"
            " not signalled; PID file removed"
        )
    elif st == "missing-pidfile":
        messages.append(f"running (pid {min(tops)}) without its PID file: found by its marker")
    if not tops and st in ("stopped",):
        messages.append("not running; nothing to stop")
    return bool(tops), bool(info.get("pidfile_exists")), messages


def describe_pid_process(spec: ProcSpec, info: dict) -> str:
    st, fpid, tops = info.get("state"), info.get("pidfile_pid"), info.get("tops") or []
    text = {
        "running": f"running, pid {fpid} (PID file ok)",
        "missing-pidfile": f"running, pid {min(tops) if tops else '?'}, PID file MISSING (start/stop adopt it)",
        "stale": f"not running: stale PID file (pid {fpid} is gone; start/stop remove it)",
        "reused": f"not running: stale PID file (pid {fpid} is now {info.get('pidfile_cmdline') or 'another program'})",
        "stopped": "stopped",
    }.get(st, st)
    if st in ("stale", "reused") and tops:
        text += f"; but an instance runs as pid {min(tops)} (start/stop adopt it)"
    return text


def describe_port(spec: ProcSpec, info: dict) -> str:
    if not spec.port:
        return ""
    port = info.get("port") or {}
    if not port.get("listening"):
        return f"port {spec.port} not listening"
    if foreign_holders(info, spec.family):
        return f"port {spec.port} held by ANOTHER program ({port_problem(spec, info)})"
    pids = sorted({h["pid"] for h in port.get("holders", [])})
    return f"port {spec.port} listening (pid {', '.join(map(str, pids))})"


def _wait_listening(spec: ProcSpec, mode: str, timeout_s: float) -> tuple[bool, str]:
    """Poll until the port listens with a process of this instance; (ok, last observed)."""
    started = time.monotonic()
    deadline = started + timeout_s
    observed = "no answer"
    while True:
        info = processes([spec], mode).get(spec.id, {})
        port = info.get("port") or {}
        ours = [h for h in port.get("holders", []) if h.get("marker") == spec.marker(mode)]
        if spec.port is None and info.get("tops"):
            return True, f"pid {min(info['tops'])}"
        if ours:
            return True, f"pid {min(info.get('tops') or [ours[0]['pid']])} listening on {spec.port}"
        if mode == "pidfile" and not info.get("tops"):
            # stale: it wrote its PID file and died. stopped: not even exec'd yet (a
            # moment after the launch), or it never got that far.
            if info.get("state") == "stale":
                return False, "the process exited right after it was started"
            if info.get("state") == "stopped" and time.monotonic() - started > 10:
                return False, "no process appeared (the PID file was never written)"
        observed = f"{describe_pid_process(spec, info) if mode == 'pidfile' else 'unit started'}; {describe_port(spec, info)}"
        if time.monotonic() >= deadline:
            return False, observed
        time.sleep(0.3)


# ----------------------------------------------------------------------------- PID files


@operation()
def pid_process_running(spec: ProcSpec, start_timeout_s: float = 60):
    """Make `spec` run in the background with a PID file; see the module docstring."""
    info = processes([spec], "pidfile").get(spec.id, {})
    action, messages = plan_start(info)
    for message in messages:
        say(f"{spec.id}: {message}")
    if action == "noop":
        host.noop(f"{spec.id} is running")
        return
    if info.get("pidfile_exists") and info.get("state") in ("stale", "reused"):
        yield StringCommand(f"rm -f {q(spec.pidfile)}")
    if action == "adopt":
        yield StringCommand(f"umask 077 && mkdir -p {q(spec.pidfile.rsplit('/', 1)[0])} && echo {min(info['tops'])} > {q(spec.pidfile)}")
        return
    if problem := port_problem(spec, info):
        yield fail(f"{spec.id} not started: {problem}")
        return
    yield StringCommand(start_command(spec))
    if not state.is_executing:
        return
    ok, observed = _wait_listening(spec, "pidfile", start_timeout_s)
    if ok:
        say(f"{spec.id}: started ({observed}); log {spec.log}")
        return
    yield fail(f"{spec.id} did not start within {start_timeout_s:g}s: {observed} (log: {spec.log})", spec.log)


@operation()
def pid_process_stopped(spec: ProcSpec, stop_timeout_s: float = 15):
    """Stop the PID-file instance of `spec` (graceful, then forced); clean its PID file."""
    info = processes([spec], "pidfile").get(spec.id, {})
    running, remove, messages = plan_stop(info)
    for message in messages:
        say(f"{spec.id}: {message}")
    if not running and not remove:
        host.noop(f"{spec.id} is not running")
        return
    if running:
        yield reporting(stop_command(spec.marker("pidfile"), stop_timeout_s), f"{spec.id}: ")
    if remove or running:
        yield StringCommand(f"rm -f {q(spec.pidfile)}")


# ----------------------------------------------------------------------------- hooks
# For deploys/parts/releases.py: run now (at execution, inside its switch), return (ok, message).


def _shell(host_, command: str) -> tuple[bool, str]:
    ok, output = host_.run_shell_command(StringCommand(command))
    return ok, "\n".join([*output.stdout_lines, *output.stderr_lines][-20:])


def stop_now(host_, spec: "ProcSpec", stop_timeout_s: float) -> tuple[bool, str]:
    """Stop `spec` in whichever mode it runs (PID file and/or user unit)."""
    ok, message = _shell(host_, f"{stop_command(spec.marker('pidfile'), stop_timeout_s)} && rm -f {q(spec.pidfile)}")
    if not ok:
        return False, message
    units = user_units([spec])
    if units.get("units", {}).get(spec.unit, {}).get("ActiveState") in ("active", "activating", "reloading"):
        ok, unit_message = _shell(host_, f"{USER_SYSTEMCTL} stop {q(spec.unit)}")
        return ok, f"unit {spec.unit} stopped" if ok else unit_message
    return True, "" if message.strip() == "not running" else message


def start_now(host_, spec: "ProcSpec", mode: str, start_timeout_s: float) -> tuple[bool, str]:
    """Start `spec` in `mode` and wait (bounded) until it listens; the log's tail on failure."""
    if mode == "pidfile":
        ok, message = _shell(host_, start_command(spec))
    else:
        ok, message = _shell(host_, f"{USER_SYSTEMCTL} reset-failed {q(spec.unit)} 2>/dev/null; {USER_SYSTEMCTL} start {q(spec.unit)}")
    if not ok:
        return False, message
    ok, observed = _wait_listening(spec, mode, start_timeout_s)
    if ok:
        return True, observed
    _, tail = _shell(host_, f"tail -n 15 {q(spec.log)} 2>/dev/null || true")
    return False, f"{observed}; last lines of {spec.log}:\n{tail}"


# ----------------------------------------------------------------------------- systemd --user


def user_units(specs: list[ProcSpec]) -> dict:
    return host.get_fact(UserUnits, units=" ".join(s.unit for s in specs))


def systemctl(*args: str) -> StringCommand:
    return StringCommand(f"{USER_SYSTEMCTL} " + " ".join(q(a) for a in args))


def _unit_files_present(unit_dir: str, specs: list[ProcSpec]) -> list[str]:
    return [s.unit for s in specs if host.get_fact(File, path=f"{unit_dir}/{s.unit}")]


@operation()
def linger_enabled(use_sudo: bool = False, wait_s: float = 20):
    """logind lingering for the login user (its units start at boot, survive logout).

    Needs root or a polkit grant: with `use_sudo` this ONE command runs under sudo;
    without it, `loginctl enable-linger` is tried as the user (allowed from an active
    desktop session by polkit's default policy).
    """
    ident = host.get_fact(Identity)
    if ident.get("linger"):
        host.noop(f"lingering is enabled for {ident.get('user')}")
        return
    yield StringCommand(f"loginctl enable-linger {q(ident['user'])}", _sudo=bool(use_sudo))
    if not state.is_executing:
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if (host.get_fact(UserUnits, units="default.target").get("manager") or "offline") != "offline":
            return
        time.sleep(0.5)
    yield fail(f"lingering enabled but no systemd user manager answered within {wait_s:g}s")


@operation()
def user_units_stopped(specs: list[ProcSpec]):
    """Stop the units that are active (systemd: SIGTERM, SIGKILL after TimeoutStopSec)."""
    info = user_units(specs)
    if info.get("manager") in (None, "offline"):
        host.noop("no systemd user manager: no unit runs")
        return
    active = [s.unit for s in specs if info["units"].get(s.unit, {}).get("ActiveState") in ("active", "activating", "reloading")]
    if not active:
        host.noop("units are not running")
        return
    say(f"stopping {', '.join(active)}")
    yield systemctl("stop", *active)


@operation()
def user_units_removed(specs: list[ProcSpec], unit_dir: str):
    """Switching to PID files: stop and disable the units, delete their files."""
    present = _unit_files_present(unit_dir, specs)
    if not present:
        host.noop("no user units installed")
        return
    say(f"switching to PID files: stopping, disabling and removing {', '.join(present)}")
    names = " ".join(q(u) for u in present)
    yield StringCommand(f"{USER_SYSTEMCTL} disable --now {names} 2>&1 || true")
    files = " ".join(q(f"{unit_dir}/{u}") + " " + q(f"{unit_dir}/default.target.wants/{u}") for u in present)
    yield StringCommand(f"rm -f {files}")
    yield StringCommand(f"{USER_SYSTEMCTL} daemon-reload 2>/dev/null || true")


@operation()
def user_units_running(specs: list[ProcSpec], start_timeout_s: float = 60):
    """Enable (start at login / boot with lingering) and start the units; wait for ports."""
    info = user_units(specs)
    if info.get("manager") in (None, "offline"):
        yield fail(
            "no systemd user manager answers for this user: enable lingering "
            "(`loginctl enable-linger`) or log in to a desktop session, then re-run"
        )
        return
    units = info.get("units", {})
    if disabled := [s.unit for s in specs if units.get(s.unit, {}).get("UnitFileState") != "enabled"]:
        yield systemctl("enable", *disabled)
    inactive = [s for s in specs if units.get(s.unit, {}).get("ActiveState") != "active"]
    if not inactive and not disabled:
        for s in specs:
            say(f"{s.id}: already running (unit {s.unit}, pid {units[s.unit].get('MainPID')}); not started again")
        return
    for s in specs:
        if s not in inactive:
            say(f"{s.id}: already running (unit {s.unit}); not started again")
    if not inactive:
        return
    procs = processes(inactive, "systemd")
    for s in inactive:
        if problem := port_problem(s, procs.get(s.id, {})):
            yield fail(f"{s.id} not started: {problem}")
            return
    failed = [s.unit for s in inactive if units.get(s.unit, {}).get("ActiveState") == "failed"]
    if failed:
        yield systemctl("reset-failed", *failed)
    yield systemctl("start", *[s.unit for s in inactive])
    if not state.is_executing:
        return
    for s in inactive:
        ok, observed = _wait_listening(s, "systemd", start_timeout_s)
        if not ok:
            yield StringCommand(f"{USER_SYSTEMCTL} status --no-pager {q(s.unit)} >&2 || true")
            yield fail(f"{s.id} (unit {s.unit}) did not start within {start_timeout_s:g}s: {observed}", s.log)
            return
        say(f"{s.id}: started by systemd ({observed}); log {s.log}")


# ----------------------------------------------------------------------------- status


def _health(spec: ProcSpec) -> str:
    if not spec.health_url:
        return ""
    result = host.get_fact(HttpHealth, url=spec.health_url)
    return f"health: {describe_http(result)}"


@operation(is_idempotent=True)
def status_report(specs: list[ProcSpec], mode: str, title: str, extra: list[str] | None = None):
    """Log each process's state, PIDs, ports and health (both modes); change nothing."""
    if not state.is_executing:
        host.noop("status is read when the deploy runs")
        return
    lines = [title, *(extra or [])]
    pid_info = processes(specs, "pidfile")
    unit_info = user_units(specs)
    sd_info = processes(specs, "systemd")
    for s in specs:
        pinfo, uinfo = pid_info.get(s.id, {}), unit_info.get("units", {}).get(s.unit, {})
        sd_running = uinfo.get("ActiveState") == "active"
        pid_any = pinfo.get("state") != "stopped" or pinfo.get("tops")
        if mode == "systemd" or sd_running:
            lines.append(
                f"  {s.id:<9} unit {s.unit}: {uinfo.get('ActiveState', 'not installed')}"
                f" ({uinfo.get('SubState', '-')}), pid {uinfo.get('MainPID') or '-'},"
                f" {uinfo.get('UnitFileState') or 'not installed'}, restarts {uinfo.get('NRestarts', 0)};"
                f" {describe_port(s, sd_info.get(s.id, {}) if sd_running else pinfo)}"
            )
        if mode == "pidfile" or pid_any:
            lines.append(f"  {s.id:<9} PID file {s.pidfile}: {describe_pid_process(s, pinfo)}; {describe_port(s, pinfo)}")
        if (pinfo.get("port") or {}).get("listening"):
            lines.append(f"  {'':<9} {_health(s)}")
        lines.append(f"  {'':<9} log {s.log}")
    if mode == "systemd":
        lines.append(f"  systemd user manager: {unit_info.get('manager') or 'not available'}")
    yield from lines_logged(lines)
