"""A hardened systemd service built from data.

The unit runs as a dedicated system user, reads secrets from a root-only
EnvironmentFile, sees a read-only filesystem except its own `read_write_paths`, and
restarts only when its unit, environment or code changed. With the defaults,
`systemd-analyze security` scores it about 1.6 (the plans' units score 9+).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import HiddenValue, deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server, systemd

from deploys.errors import ConfigError
from deploys.operations import secret_file
from deploys.templating import render_io

_UNIT_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.@-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESTART = {"no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog"}


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
        return cls(**merged)


def render_unit(spec: ServiceSpec):
    return render_io("etc/systemd/system/service.j2", spec=spec)


def render_env_file(secrets: dict) -> HiddenValue:
    """KEY="value" lines for systemd's EnvironmentFile (double-quoted, escaped)."""
    lines = []
    for key, value in sorted(secrets.items()):
        raw = value.unmask() if isinstance(value, HiddenValue) else str(value)
        if "\n" in raw:
            raise ConfigError(f"secret {key} contains a newline")
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


@deploy("Hardened systemd service")
def hardened_service(spec: ServiceSpec, restart_when: tuple[OperationMeta, ...] = ()):
    """Install the unit and env file, then make the service enabled and running.

    `restart_when`: operations (code, venv, config) whose change must restart it.
    """
    if spec.create_user:
        server.group(name=f"Group {spec.group}", group=spec.group, system=True)
        server.user(
            name=f"User {spec.user}",
            user=spec.user,
            group=spec.group,
            system=True,
            shell="/usr/sbin/nologin",
            home=spec.working_dir,
            create_home=False,
            ensure_home=False,
        )
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
    systemd.service(
        name=f"Restart {spec.name} (its unit, environment or code changed)",
        service=f"{spec.name}.service",
        running=True,
        restarted=True,
        _if=lambda: any(op.did_change() for op in changes),
    )
    systemd.service(
        name=f"{spec.name} enabled and running",
        service=f"{spec.name}.service",
        running=True,
        enabled=True,
    )
