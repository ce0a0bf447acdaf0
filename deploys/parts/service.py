"""A hardened systemd service built from data.

The unit runs as a dedicated system user, reads secrets from a root-only
EnvironmentFile, sees a read-only filesystem except its own `read_write_paths`, and
restarts only when its unit, environment or code changed. With the defaults,
`systemd-analyze security` scores it about 1.6 (the plans' units score 9+).

The sandbox is per-service data: `address_families` (an app that reads its interfaces
over netlink, like Music Assistant through ifaddr/zeroconf, needs AF_NETLINK). A restart
the deploy asks for first clears systemd's start limit (`reset-failed`), so a crash loop
left by an earlier run never wedges the next one; with `restart_failure="gate"` a failed
restart does not stop the run: the health gate after it decides (and rolls back).
Every value that goes into the unit is refused if it holds a control character (a
newline would inject unit lines), and the service user is created only as a system
account: root or an existing login account is never modified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Users
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus
from pyinfra.operations import files, server, systemd

from deploys.errors import ConfigError
from deploys.operations import secret_file
from deploys.templating import render_io
from facts.restarts import ServiceInputs, record_command

_UNIT_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.@-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESTART = {"no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FAMILY = re.compile(r"^AF_[A-Z0-9]+$")
DEFAULT_ADDRESS_FAMILIES = ("AF_UNIX", "AF_INET", "AF_INET6")
SYS_UID_MAX = 999  # Debian/Ubuntu login.defs: system accounts are 1..999


def _control_char_problems(merged: dict) -> list[str]:
    """Every string that ends up in the unit file, checked for control characters."""
    problems = []

    def walk(where: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{where} key {key!r}", key)
                walk(f"{where}[{key!r}]", item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(where, item)
        elif isinstance(value, str) and _CONTROL.search(value):
            problems.append(f"{where} {value!r} contains a control character (newline, tab ...)")

    for key, value in merged.items():
        if key != "secrets":
            walk(key, value)
    return problems

@dataclass(frozen=True)
class ServiceSpec:
    """Everything the unit template needs. Build it with `ServiceSpec.from_data`."""

    name: str
    exec_start: str
    user: str
    working_dir: str
    description: str = ""
    group: str = ""
    type: str = "simple"
    env: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)  # name -> HiddenValue, into the env file
    read_write_paths: tuple = ()
    state_dirs: tuple = ()  # created for the service user (0750) and writable by it
    after: tuple = ()
    restart: str = "on-failure"
    restart_sec: int = 5
    timeout_stop_sec: int = 30
    private_users: bool = False
    memory_deny_write_execute: bool = True
    capabilities: tuple = ()
    address_families: tuple = DEFAULT_ADDRESS_FAMILIES  # RestrictAddressFamilies=
    extra: dict = field(default_factory=dict)
    create_user: bool = True

    @property
    def unit_path(self) -> str:
        return f"/etc/systemd/system/{self.name}.service"

    @property
    def env_file(self) -> str | None:
        return f"/etc/{self.name}/{self.name}.env" if self.secrets else None

    @classmethod
    def from_data(cls, data: dict, secrets: dict | None = None, defaults: dict | None = None):
        """Validate a service's data dict; one error listing every problem."""
        merged = {**(defaults or {}), **data}
        problems = []
        name = merged.get("name", "")
        for key in ("name", "exec_start", "user", "working_dir"):
            if not merged.get(key):
                problems.append(f"'{key}' is required")
        if name and not _UNIT_NAME.match(name):
            problems.append(f"name {name!r} is not a valid unit name")
        if merged.get("restart", "on-failure") not in _RESTART:
            problems.append(f"restart {merged.get('restart')!r} is not one of {sorted(_RESTART)}")
        bad_keys = [k for k in {**merged.get("env", {}), **(secrets or {})} if not _ENV_KEY.match(k)]
        if bad_keys:
            problems.append(f"invalid environment variable names {bad_keys}")
        problems += _control_char_problems(merged)
        bad_families = [f for f in merged.get("address_families", ()) if not _FAMILY.match(str(f))]
        if bad_families or not merged.get("address_families", DEFAULT_ADDRESS_FAMILIES):
            problems.append(f"address_families {list(merged.get('address_families', ()))!r} must be AF_* names")
        paths = [*merged.get("read_write_paths", ()), *merged.get("state_dirs", ())]
        for path in [merged.get("working_dir", "/"), *paths]:
            if not str(path).startswith("/"):
                problems.append(f"path {path!r} must be absolute")
        if problems:
            raise ConfigError(f"service {name or '?'}: " + "; ".join(problems))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(f"service {name}: unknown keys {unknown}")
        merged.setdefault("group", merged["user"])
        merged.setdefault("description", name)
        merged["secrets"] = dict(secrets or {})
        merged["read_write_paths"] = tuple(
            dict.fromkeys([*merged.get("state_dirs", ()), *merged.get("read_write_paths", ())])
        )
        for key in ("state_dirs", "after", "capabilities"):
            merged[key] = tuple(merged.get(key, ()))
        merged["address_families"] = tuple(merged.get("address_families", DEFAULT_ADDRESS_FAMILIES))
        return cls(**merged)


def render_unit(spec: ServiceSpec):
    return render_io("etc/systemd/system/service.j2", spec=spec)


def render_env_file(secrets: dict) -> HiddenValue:
    """KEY="value" lines for systemd's EnvironmentFile (double-quoted, escaped)."""
    lines = []
    for key, value in sorted(secrets.items()):
        raw = value.unmask() if isinstance(value, HiddenValue) else str(value)
        if re.search(r"[\x00\r\n]", raw):
            raise ConfigError(f"secret {key} contains a newline (or CR/NUL)")
        for char in ("\\", '"', "$", "`"):
            raw = raw.replace(char, "\\" + char)
        lines.append(f'{key}="{raw}"')
    return HiddenValue("".join(line + "\n" for line in lines))


def service_defaults() -> dict:
    """Knobs from group data that apply to every service unless the service sets them."""
    return {
        "restart": host.data.get("service_restart", "on-failure"),
        "restart_sec": host.data.get("service_restart_sec", 5),
        "private_users": host.data.get("service_private_users", False),
        "memory_deny_write_execute": host.data.get("service_memory_deny_write_execute", True),
    }


def account_problem(user: str, accounts: dict | None) -> str | None:
    """Why `user` must not be (re)made a nologin system account, or None.

    `accounts` is pyinfra's Users fact. Root and accounts outside the system range
    (login users such as "jason") would get their shell and home rewritten by usermod.
    """
    existing = (accounts or {}).get(user)
    if existing is None:
        return None
    uid = int(existing.get("uid", -1))
    if uid == 0:
        return f"service user {user!r} is root: refusing to make it a nologin service account"
    if uid > SYS_UID_MAX:
        return (f"service user {user!r} is an existing login account (uid {uid}): refusing to change its "
                "shell and home; use a dedicated system user, or set create_user False to run as it unchanged")
    return None


def system_user(user: str, group: str, home: str) -> None:
    """`user`:`group` as a nologin system account; refused before any change for root or a
    login account that already exists."""
    if problem := account_problem(user, host.get_fact(Users)):
        raise ConfigError(f"{host.name}: {problem}")
    server.group(name=f"Group {group}", group=group, system=True)
    server.user(
        name=f"User {user}", user=user, group=group, system=True, shell="/usr/sbin/nologin",
        home=home, create_home=False, ensure_home=False,
    )


def _failure_tail(unit: str, restart_failure: str) -> list:
    """After a failed start: fail here, or (`gate`) log it and leave it to the health gate."""
    if restart_failure == "gate":
        note = f"{unit} did not start; the health gate decides (and rolls back)"
        return ["||", "echo", QuoteString(note), ">&2"]
    return []


@operation()
def service_running(unit: str, restart_failure: str = "fail"):
    """`unit` enabled and active. A unit in `failed` (e.g. start-limit-hit) is reset first,
    so an earlier crash loop cannot make this start fail with "start request repeated too
    quickly"."""
    status = (host.get_fact(SystemdStatus, services=[unit]) or {}).get(unit)  # this unit only: cheap
    enabled = (host.get_fact(SystemdEnabled, services=[unit]) or {}).get(unit)
    if not enabled:
        yield StringCommand("systemctl", "enable", QuoteString(unit))
    if status:
        host.noop(f"{unit} is running")
        return
    yield StringCommand(
        "systemctl", "reset-failed", QuoteString(unit), "2>/dev/null;",
        "systemctl", "start", QuoteString(unit), *_failure_tail(unit, restart_failure),
    )


def restart_command(unit: str, restart_failure: str = "fail") -> str:
    """`reset-failed` then `restart`: a restart the deploy asks for is never refused by
    systemd's start limit."""
    tail = f" || echo '{unit} did not start; the health gate decides (and rolls back)' >&2" if restart_failure == "gate" else ""
    return f"systemctl reset-failed {unit} 2>/dev/null; systemctl restart {unit}{tail}"


def recorded_restart_command(unit: str, inputs: list[str], restart_failure: str = "fail") -> str:
    """Restart (units reloaded, start limit cleared); only a restart that succeeded records
    its inputs. The reload: a unit file written by a run that died before its own reload."""
    record = record_command(unit, inputs)
    reset = f"systemctl daemon-reload; systemctl reset-failed {unit} 2>/dev/null;"
    if restart_failure == "gate":
        return (f"{reset} if systemctl restart {unit}; then {record}; "
                f"else echo '{unit} did not start; the health gate decides (and rolls back)' >&2; fi")
    return f"{reset} systemctl restart {unit} && {record}"


def restart_inputs(spec: ServiceSpec, restart_paths: tuple[str, ...] = ()) -> list[str]:
    """What a restart of `spec` records (facts/restarts.py): unit, env file, code paths."""
    return [spec.unit_path, *([spec.env_file] if spec.env_file else []), *restart_paths]


def release_hooks(spec: ServiceSpec, restart_paths: tuple[str, ...] = ()):
    """(stop, start) hooks of deploys/parts/releases.py for this service: the start clears
    the start limit and records what it started with, so a rollback records the release it
    put back and the next run does not restart it once more."""
    from deploys.parts.releases import run_command  # here: a deploy without releases (hello) never loads them

    unit = f"{spec.name}.service"
    inputs = restart_inputs(spec, restart_paths)

    def stop(host_):
        return run_command(host_, f"systemctl stop {unit}")

    def start(host_):
        return run_command(host_, recorded_restart_command(unit, inputs))

    return stop, start


@deploy("Hardened systemd service")
def hardened_service(spec: ServiceSpec, restart_when: tuple[OperationMeta, ...] = (), restart_failure: str = "fail",
                     restart_paths: tuple[str, ...] = (), started_by_switch: bool = False):
    """Install the unit and env file, then make the service enabled and running.

    `restart_when`: operations (code, venv, config) whose change must restart it.
    `restart_paths`: what those operations write (a code dir, a release link); their
    digest is recorded at each restart, so a change whose run died before the restart
    still restarts the service on the next run (facts/restarts.py).
    `restart_failure`: "fail" stops the run when the (re)start fails; "gate" leaves that to
    a health gate that runs next and rolls back (see module doc).
    `started_by_switch`: a release switch later in this run (re)starts it with
    `release_hooks`; only the unit and env file are installed here, and the caller makes
    it `service_running` after the switch.
    """
    if restart_failure not in ("fail", "gate"):
        raise ConfigError(f"service {spec.name}: restart_failure must be 'fail' or 'gate'")
    if spec.create_user:
        system_user(spec.user, spec.group, spec.working_dir)
    for path in spec.state_dirs:
        files.directory(
            name=f"State directory {path}",
            path=path,
            user=spec.user,
            group=spec.group,
            mode="750",
        )
    changes = list(restart_when)
    if spec.env_file:
        files.directory(
            name=f"Secrets directory /etc/{spec.name}",
            path=f"/etc/{spec.name}",
            user="root",
            group="root",
            mode="700",
        )
        changes.append(
            secret_file(
                name=f"Environment file {spec.env_file}",
                dest=spec.env_file,
                content=render_env_file(spec.secrets),
            )
        )
    unit = files.put(
        name=f"Unit {spec.unit_path}",
        src=render_unit(spec),
        dest=spec.unit_path,
        user="root",
        group="root",
        mode="644",
    )
    changes.append(unit)
    systemd.daemon_reload(name="Reload systemd units", _if=unit.did_change)
    unit_name = f"{spec.name}.service"
    if started_by_switch:
        return
    inputs = restart_inputs(spec, restart_paths)
    seen = host.get_fact(ServiceInputs, unit=unit_name, paths=inputs)
    # Changed by a run that died before its restart: the files are new, the process is not.
    stale = seen["recorded"] is not None and seen["recorded"] != seen["current"]
    server.shell(
        name=f"Restart {spec.name} (its unit, environment or code changed)",
        commands=[recorded_restart_command(unit_name, inputs, restart_failure)],
        _if=lambda: stale or any(op.did_change() for op in changes),
    )
    server.shell(
        name=f"Record what {spec.name} runs with",
        commands=[record_command(unit_name, inputs)],
        _if=lambda: seen["recorded"] is None and not any(op.did_change() for op in changes),
    )
    service_running(name=f"{spec.name} enabled and running", unit=unit_name, restart_failure=restart_failure)
