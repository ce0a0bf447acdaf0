"""youtube's long builds as host steps (issue 15, item 4): the user-scope transient unit
command of deploys/parts/host_steps.py (fake systemctl / systemd-run on PATH, as in
test_host_steps.py), the build scripts run for real in a temporary directory (a build an
earlier, cut-off run finished is recognised and not repeated), and when the deploy uses
units at all (lingering on, a user manager answering, youtube_build_units)."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from deploys import youtube
from deploys.errors import ConfigError
from deploys.parts.host_steps import UnitState, host_step
from deploys.parts.python_env import venv_script
from tests.unit.test_host_steps import FAKES as SYSTEM_FAKES

# the same fakes, reached as `systemctl --user ...`
FAKES = {**SYSTEM_FAKES, "systemctl": SYSTEM_FAKES["systemctl"].replace(
    'echo "systemctl $*" >> "$LOG"\n', 'echo "systemctl $*" >> "$LOG"\n[ "$1" = --user ] && shift\n')}


def run_user_step(tmp_path, script: str = "true", **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls, out = tmp_path / "calls", tmp_path / "step.log"
    command = host_step("yt-venv", ["sh", "-c", script], "venv", timeout_s=60, scope="user", log=str(out)).get_raw_value()
    full_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(calls), "STATE": str(tmp_path / "state"), **env}
    proc = subprocess.run(["sh", "-c", command], env=full_env, capture_output=True, text=True)
    return proc, calls.read_text()


def test_a_user_step_runs_under_the_users_manager_with_a_log_file(tmp_path):
    proc, calls = run_user_step(tmp_path, HTTPS_PROXY="http://proxy.invalid:3128")
    assert proc.returncode == 0, proc.stderr
    assert "systemctl --user is-active yt-venv.service" in calls
    assert "systemctl --user reset-failed yt-venv.service" in calls
    # the session's PATH and proxy go along (as in the foreground), unset names do not
    assert "systemd-run --user --setenv=PATH --setenv=HTTPS_PROXY --quiet --unit=yt-venv.service" in calls and "--wait" not in calls
    assert "--setenv=PIP_INDEX_URL" not in calls
    assert f"--property=StandardOutput=append:{tmp_path / 'step.log'}" in calls and "journal" not in calls


def test_an_earlier_user_step_still_going_is_waited_for_and_its_log_kept(tmp_path):
    (tmp_path / "step.log").write_text("pip: installing ...\n")
    proc, calls = run_user_step(tmp_path, ACTIVE_ROUNDS="2")
    assert "an earlier run (an apply that was cut off) is still going: waiting for it" in proc.stderr
    assert "pip: installing ..." in proc.stderr  # its output so far
    assert calls.index("is-active") < calls.index("systemd-run")
    assert (tmp_path / "step.log.1").read_text() == "pip: installing ...\n"  # the new run's log is fresh
    (tmp_path / "again").mkdir()
    failed, _ = run_user_step(tmp_path / "again", STEP_RC="3")
    assert failed.returncode == 3 and "failed (exit 3); its output: " in failed.stderr
    (tmp_path / "unit-failed").mkdir()  # started, then the unit itself failed (it stays loaded)
    failed, _ = run_user_step(tmp_path / "unit-failed", RESULT="exit-code")
    assert failed.returncode == 1 and "failed (exit 1)" in failed.stderr


def test_a_user_step_needs_a_log_path_without_spaces_and_a_known_scope():
    with pytest.raises(ConfigError):
        host_step("yt", ["true"], scope="user")
    with pytest.raises(ConfigError):
        host_step("yt", ["true"], scope="user", log="/home/a b/x.log")
    with pytest.raises(ConfigError):
        host_step("yt", ["true"], scope="nobody", log="/tmp/x.log")
    assert "systemctl --user show -p ActiveState" in UnitState().command(unit="yt", scope="user")
    assert UnitState().command(unit="yt").split("; ")[1].startswith("systemctl show")


def sh(script: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], cwd=cwd, capture_output=True, text=True)


FAKE_PYTHON = """#!/bin/sh
# `python -m venv DIR`: a venv whose pip records its arguments
mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
printf '#!/bin/sh\\necho "$@" >> %s/pip-calls\\n' "$(dirname "$3")" > "$3/bin/pip" && chmod +x "$3/bin/pip"
"""


def test_the_venv_script_builds_once_and_recognises_an_earlier_runs_venv(tmp_path):
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    venv, req = tmp_path / "venvs" / "abc123", tmp_path / "requirements.txt"
    req.write_text("fastapi\n")
    script = venv_script(str(venv), str(python), str(req), ["--no-index"], resume=True)
    first = sh(script, tmp_path)
    assert first.returncode == 0, first.stderr
    assert (venv / ".complete").exists() and (tmp_path / "venvs" / "pip-calls").read_text().count("install") == 1
    again = sh(script, tmp_path)  # as the next apply's unit after a cut-off run finished the venv
    assert "venv abc123 was built by an earlier run" in again.stdout
    assert (tmp_path / "venvs" / "pip-calls").read_text().count("install") == 1
    (venv / ".complete").unlink()  # cut off before the end: built again from scratch
    assert sh(script, tmp_path).returncode == 0 and (tmp_path / "venvs" / "pip-calls").read_text().count("install") == 2
    assert "was built by an earlier run" not in venv_script(str(venv), "python3", str(req), [])


def frontend_commands(tmp_path, build_cmd: str, reinstall: bool = True) -> tuple[list[str], str]:
    src = tmp_path / "src"
    (src / "node_modules").mkdir(parents=True, exist_ok=True)
    (src / "page.tsx").write_text("export default 1\n")
    build = tmp_path / "build"
    commands = youtube.frontend_build_commands(
        str(src), str(build), str(tmp_path / "built"), "want-1", str(tmp_path / "installed"), "inst-1", ["node_modules"],
        "sh -c 'echo installed >> ../install-calls'", build_cmd, {"NEXT_PUBLIC_API_URL": "http://localhost:8001"}, (), "dist",
        reinstall,
    )
    return commands, youtube.resumable_build(commands, str(tmp_path / "built"), "want-1", str(build / "dist"))


def test_the_frontend_build_script_runs_in_order_and_is_not_repeated(tmp_path):
    commands, script = frontend_commands(tmp_path, """sh -c 'mkdir -p dist && echo "$NEXT_PUBLIC_API_URL" > dist/api && echo b >> ../build-calls'""")
    first = sh(script, tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "built").read_text().strip() == "want-1" and (tmp_path / "installed").read_text().strip() == "inst-1"
    assert (tmp_path / "build" / "dist" / "api").read_text().strip() == "http://localhost:8001"
    assert (tmp_path / "build" / ".infra-build.log").exists()  # the build's output, beside it
    again = sh(script, tmp_path)
    assert "the frontend build was finished by an earlier run" in again.stdout
    assert (tmp_path / "build-calls").read_text().count("b") == 1 and (tmp_path / "install-calls").read_text().count("installed") == 1
    # the foreground path runs the same commands one by one, each from the same cwd
    (tmp_path / "built").unlink()
    for command in commands:
        assert sh(command, tmp_path).returncode == 0
    assert (tmp_path / "build-calls").read_text().count("b") == 2


def test_a_failing_frontend_build_stops_the_script_with_its_output(tmp_path):
    _, script = frontend_commands(tmp_path, "echo 'error TS2304' >&2; exit 2", reinstall=False)
    failed = sh(script, tmp_path)
    assert failed.returncode == 1 and "error TS2304" in failed.stderr and "frontend build failed" in failed.stderr
    assert not (tmp_path / "built").exists() and not (tmp_path / "install-calls").exists()  # dependencies kept


class FakeHost:
    def __init__(self, manager: str | None):
        self.manager, self.calls = manager, []

    def get_fact(self, fact, **kwargs):
        self.calls.append(fact.__name__)
        return {"manager": self.manager, "units": {}}


def ctx(linger: bool, units: bool = True, prod: str = "/home/yt/aqa-youtube-assistant-prod"):
    data = SimpleNamespace(youtube_build_units=units, youtube_unit_prefix="aqa-youtube-prod", youtube_build_timeout_s=3600)
    return SimpleNamespace(data=data, ident={"linger": linger}, layout=SimpleNamespace(prod=prod))


@pytest.mark.parametrize("linger, units, manager, prod, expected", [
    (True, True, "running", "/home/yt/p", True),
    (True, True, "degraded", "/home/yt/p", True),
    (False, True, "running", "/home/yt/p", False),  # no lingering: the manager dies with the session
    (True, False, "running", "/home/yt/p", False),  # youtube_build_units = False
    (True, True, "offline", "/home/yt/p", False),
    (True, True, "running", "/home/y t/p", False),  # a path a unit's log file cannot take
])
def test_builds_use_user_units_only_with_lingering_and_a_manager(monkeypatch, linger, units, manager, prod, expected):
    fake = FakeHost(manager)
    monkeypatch.setattr(youtube, "host", fake)
    steps = youtube.build_steps(ctx(linger, units, prod))
    assert bool(steps) is expected
    if expected:
        assert steps["venv-build"] == ("aqa-youtube-prod-venv-build", f"{prod}/venv-build.log")
        command = youtube.build_step(ctx(linger, units, prod), steps, "frontend-build")("echo hi").get_raw_value()
        assert "aqa-youtube-prod-frontend-build" in command and "RuntimeMaxSec" in command and "'echo hi'" in command
    assert youtube.build_step(ctx(linger), {}, "venv-build") is None
    assert fake.calls == ([] if not (linger and units) else ["UserUnits"])
