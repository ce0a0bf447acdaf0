"""deploys/parts/host_steps.py: the transient-unit command, run against fake systemctl /
systemd-run / journalctl on PATH (the e2e test runs the real ones on a test host)."""

import subprocess

import pytest

from deploys.errors import ConfigError
from deploys.parts.host_steps import UnitState, host_step, parse_unit_state, unfinished

FAKES = {
    # systemctl is-active: "active" for the first $ACTIVE_ROUNDS calls, then inactive
    "systemctl": """#!/bin/sh
echo "systemctl $*" >> "$LOG"
case "$1" in
  is-active) n=$(cat "$STATE" 2>/dev/null || echo 0); echo $((n + 1)) > "$STATE"
             [ "$n" -lt "${ACTIVE_ROUNDS:-0}" ] && exit 0 || exit 3 ;;
  show) echo "${RESULT:-success}" ;;
esac
exit 0
""",
    "systemd-run": """#!/bin/sh
echo "systemd-run $*" >> "$LOG"
exit "${STEP_RC:-0}"
""",
    "journalctl": """#!/bin/sh
echo "journal of the step"
""",
    "sleep": "#!/bin/sh\nexit 0\n",
    "logger": "#!/bin/sh\nexit 0\n",
}


def run_step(tmp_path, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    command = host_step("ingestor-release", ["/opt/x/bin/release", "release", "/opt/x/plan json"], "x release",
                        timeout_s=60).get_raw_value()
    log = tmp_path / "log"
    full_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "STATE": str(tmp_path / "state"), **env}
    proc = subprocess.run(["sh", "-c", command], env=full_env, capture_output=True, text=True)
    return proc, log.read_text()


def test_a_step_runs_as_a_transient_unit_and_returns_its_status(tmp_path):
    proc, log = run_step(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ("systemd-run --quiet --wait --unit=ingestor-release.service --description=x release "
            "--property=TimeoutStopSec=120 --property=RuntimeMaxSec=60") in log
    assert log.rstrip().endswith("-- /opt/x/bin/release release /opt/x/plan json")
    assert "journal of the step" in proc.stdout and "earlier run" not in proc.stderr
    again = tmp_path / "again"
    again.mkdir()
    failed, _ = run_step(again, STEP_RC="1")
    assert failed.returncode == 1 and "host step ingestor-release.service: failed (exit 1)" in failed.stderr


def test_an_unfinished_earlier_run_is_waited_for_and_reported(tmp_path):
    proc, log = run_step(tmp_path, ACTIVE_ROUNDS="3", RESULT="exit-code")
    assert proc.returncode == 0
    assert "an earlier run (an apply that was cut off) is still going: waiting for it" in proc.stderr
    assert "the earlier run ended: exit-code" in proc.stderr
    assert log.index("reset-failed") < log.index("systemd-run")


def test_unit_names_and_state_parsing():
    with pytest.raises(ConfigError):
        host_step("bad name; rm -rf /", ["true"])
    state = parse_unit_state(["Unit=x", "ActiveState=active", "Result=success", "ExecMainStatus=0"])
    assert unfinished(state) and not unfinished({"ActiveState": "inactive"}) and not unfinished({})
    assert "systemctl show -p ActiveState" in UnitState().command(unit="ingestor-release")
