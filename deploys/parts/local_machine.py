"""A stack on the operator's own machine (as the operator: no root, no systemd): the
server's functions on a home-directory layout (`Overlay`), `~` expansion, compose start/
stop of the deployed files, the status wording, and a venv that follows a checkout's
requirements.txt (python_env.venv_script, rebuilt when its digest changes). Used by
hivesync's local roles (N.2.1, N.2.2).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import File

from deploys.operations import recorded
from deploys.parts.compose import cli_args, detected_cli, fail_command
from deploys.parts.python_env import venv_script
from facts.compose import ComposeServices


class Overlay:
    """Host data with a few knobs replaced: the server's functions on the local layout."""

    def __init__(self, data, **values):
        self._data, self._values = data, values

    def __getattr__(self, key):
        return self._values[key] if key in self._values else getattr(self._data, key)

    def get(self, key, default=None):
        return self._values[key] if key in self._values else self._data.get(key, default)


def expand_home(path: str, home: str) -> str:
    """`~/x` -> `<home>/x`; a relative path is relative to the home directory."""
    path = str(path)
    if path in ("~", ""):
        return home
    path = path[2:] if path.startswith("~/") else path
    return path.rstrip("/") if path.startswith("/") else f"{home.rstrip('/')}/{path}".rstrip("/")


@operation()
def local_compose(action: str, project: str, directory: str, compose_file: str, env_file: str, services,
                  app: str = "the stack", deploy_hint: str = "deploy it first"):
    """`stop` (containers and volumes stay) or `start` (`up -d` of the deployed files):
    nothing when every service already is as asked. Starting what was never deployed
    fails with "`app` is not deployed ...: `deploy_hint`"."""
    cli = detected_cli() or "docker compose"
    compose_path = f"{directory}/{compose_file}"
    running = host.get_fact(ComposeServices, project=project)
    up = [s for s in services if (running.get(s) or {}).get("state") == "running"]
    args = cli_args(cli, project, compose_path, f"{directory}/{env_file}")
    if action == "stop":
        if not up:
            host.noop(f"compose project {project}: stopped")
            return
        yield StringCommand("cd", QuoteString(directory), "&&", *args, "stop")
        return
    if not host.get_fact(File, path=compose_path):
        yield fail_command(f"{app} is not deployed on this machine yet ({compose_path} is missing): {deploy_hint}")
        return
    if len(up) == len(list(services)):
        host.noop(f"compose project {project}: {len(up)} services running")
        return
    yield StringCommand("cd", QuoteString(directory), "&&", *args, "up", "-d")


STOPPED = ("exited", "dead", "created")  # no process: a health docker kept is stale


def service_state(info: dict) -> str:
    """`running (healthy)`, `restarting (unhealthy)`, `paused (healthy)`; a stopped
    container: `exited (code 0)`, never its last health (docker keeps `unhealthy` on a
    container it stopped)."""
    state = info.get("state") or "not created"
    if state == "exited" and info.get("exit_code") is not None:
        return f"{state} (code {info['exit_code']})"
    if state in STOPPED or not info.get("health"):
        return state
    return f"{state} ({info['health']})"


@operation()
def dev_venv(venv: str, python: str, venv_args: list, requirements: str, digest: str, pip_args: list):
    """The checkout's requirements in a venv, rebuilt when requirements.txt changes (its
    digest is recorded last: a failed pip install is rebuilt next time)."""
    record = f"{venv}/.requirements.sha256"
    if recorded(record) == digest:
        host.noop(f"venv {venv} follows {requirements} ({digest[:12]})")
        return
    script = venv_script(venv, python, requirements, list(pip_args), venv_args=list(venv_args),
                         failure=f"pip install -r {requirements} failed")
    yield StringCommand(f"{script} && echo {digest} >", QuoteString(record))
