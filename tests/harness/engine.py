"""Make sure a Docker engine answers, starting `dockerd` ourselves if needed.

CI machines and this kind of VM have docker.io installed but no init system that starts
it, so the harness starts `dockerd` in the background (detached, logging to a file) and
waits for `docker info`. On laptops Docker Desktop or systemd already runs the engine and
this is a no-op.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from ._util import CACHE_DIR, HarnessError, file_lock, log, run

ENGINE_TIMEOUT = 60.0
DOCKERD_LOG = CACHE_DIR / "dockerd.log"


class EngineError(HarnessError):
    """No Docker engine could be reached or started."""


def engine_answers() -> bool:
    """True when `docker info` succeeds (the engine is up and we may talk to it)."""
    return _docker_info_error() is None


def _docker_info_error() -> str | None:
    """None if `docker info` works, else why not (its stderr, shortened)."""
    if not shutil.which("docker"):
        return "the docker CLI is not installed"
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=15)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return f"`docker info` failed: {exc}"
    if proc.returncode == 0 and proc.stdout.strip():
        return None
    output = (proc.stderr or proc.stdout).strip()
    return output.splitlines()[-1] if output else f"`docker info` exited {proc.returncode}"


def ensure_engine(timeout: float = ENGINE_TIMEOUT) -> None:
    """Return once `docker info` answers; start dockerd first if it does not.

    Idempotent and safe to call from several processes at once (file lock). Raises
    EngineError with the tail of the dockerd log when the engine cannot be started.
    """
    if engine_answers():
        return
    if os.environ.get("DOCKER_HOST"):  # a remote/custom engine: starting a local one won't help
        raise EngineError(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer: "
                          f"{_docker_info_error()}")
    with file_lock("engine"):
        if engine_answers():  # another process started it while we waited for the lock
            return
        _start_dockerd()
        _wait_for_engine(timeout)


def _start_dockerd() -> None:
    """Launch dockerd: detached as root (no init system here), else through systemd + sudo."""
    if not shutil.which("docker"):
        raise EngineError("the `docker` CLI is not installed: run `make bootstrap` "
                          "(or apt-get install docker.io)")
    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin")
    action = start_action(euid=os.geteuid(), dockerd=dockerd, sudo=shutil.which("sudo"),
                          systemd=os.path.isdir("/run/systemd/system"),
                          info_error=_docker_info_error() or "")
    if isinstance(action, str):
        raise EngineError(action)
    if action == ["dockerd"]:
        if _dockerd_running():
            log("dockerd is already starting; waiting for it")
            return
        DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(DOCKERD_LOG, "ab") as logf:
            subprocess.Popen([dockerd], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True, close_fds=True)
        log(f"started dockerd (log: {DOCKERD_LOG})")
        return
    log(f"starting the engine: {' '.join(action)}")
    if subprocess.run(action).returncode != 0:
        raise EngineError(f"`{' '.join(action)}` failed; start the Docker engine by hand and retry")


def start_action(*, euid: int, dockerd: str | None, sudo: str | None, systemd: bool,
                 info_error: str) -> list[str] | str:
    """How to get an engine answering: ["dockerd"] (detached, as root), a command to run
    (systemd through sudo), or the one-line message that tells the user what to do."""
    if "permission denied" in info_error.lower():
        return ("the Docker engine runs but this user may not use it (permission denied on its "
                "socket): run `sudo usermod -aG docker $USER`, then log in again (or `newgrp docker`)")
    if not dockerd:
        return ("no Docker engine answers and `dockerd` is not installed: run `make bootstrap` "
                "(apt-get install docker.io), or start Docker Desktop")
    if euid == 0:
        return ["systemctl", "start", "docker"] if systemd else ["dockerd"]
    if systemd and sudo:
        return [sudo, "systemctl", "start", "docker"]
    return ("no Docker engine answers and starting dockerd needs root: run "
            + ("`sudo systemctl start docker`" if systemd else "`sudo dockerd &`")
            + " (or start Docker Desktop)")


def _dockerd_running() -> bool:
    """A dockerd process exists (it may still be initialising)."""
    proc = run(["pgrep", "-x", "dockerd"], check=False, timeout=10)
    return proc.returncode == 0


def _wait_for_engine(timeout: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if engine_answers():
            log(f"docker engine answered in {time.monotonic() - start:.1f}s")
            return
        time.sleep(0.5)
    raise EngineError(f"dockerd did not answer `docker info` within {timeout:.0f}s "
                      f"({_docker_info_error()}); log {DOCKERD_LOG}, last errors:\n{_log_errors()}")


def _log_errors(lines: int = 5) -> str:
    """The last error/fatal lines of our dockerd log (the rest is noise)."""
    try:
        text = DOCKERD_LOG.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [line for line in text if "level=error" in line or "level=fatal" in line]
    return "\n".join(errors[-lines:]) or "(none)"


def cgroup_version() -> int:
    """The engine's cgroup version (1 or 2); hosts need --cgroupns=host on v2."""
    proc = run(["docker", "info", "--format", "{{.CgroupVersion}}"], timeout=15, check=False)
    return 2 if proc.stdout.strip() == "2" else 1
