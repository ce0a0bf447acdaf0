"""Install what `make demo`, `make test` and CI need, when it is missing (Debian/Ubuntu).

    python3 tools/bootstrap.py [--dry-run] NEED...      NEED: venv hosts unit ci

    venv   python3-venv (the venv every make target uses)
    hosts  docker.io (the engine of the disposable hosts) and debootstrap (their image,
           built without a registry)
    unit   nginx-light (unit tests run `nginx -t` on rendered sites; never started)
    ci     make

The one place that installs system packages: `.ci/run`, `make demo` and `make test` all
call it. Each need is checked by what it provides (a command, a module), so an engine from
Docker Desktop or docker-ce counts as present. Missing packages are installed with apt-get
as root, or through sudo when it exists; otherwise one line names the exact command.
Standard library only, and no syntax newer than Python 3.8: it runs before the venv exists
and must be able to say that the machine's python3 is too old.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

MIN_PYTHON = (3, 11)
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"  # debootstrap and dockerd live here, often off a user's PATH


def _command(name: str) -> Callable[[], bool]:
    return lambda: bool(shutil.which(name) or shutil.which(name, path=SBIN))


def _module(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(name) is not None


@dataclass(frozen=True)
class Requirement:
    """An apt package and the check that tells whether what it provides is already here."""

    package: str
    present: Callable[[], bool] = field(compare=False)
    # the image is debootstrapped only on apt machines and as root (tests/harness/image.py);
    # elsewhere it is built `FROM debian:bookworm`, so debootstrap is not needed there
    image_build: bool = False


NEEDS: Dict[str, Tuple[Requirement, ...]] = {
    # Debian's python3 lacks ensurepip until python3-venv is installed: `venv` then fails.
    "venv": (Requirement("python3-venv", _module("ensurepip")),),
    "hosts": (
        # dockerd, not the CLI: Debian images can ship a bare docker CLI without an engine
        Requirement("docker.io", lambda: _command("dockerd")() or _docker_desktop()),
        Requirement("debootstrap", _command("debootstrap"), image_build=True),
        # debootstrap checks bookworm's signature with it; Ubuntu lacks it by default
        Requirement("debian-archive-keyring", lambda: os.path.exists(DEBIAN_KEYRING), image_build=True),
    ),
    "unit": (Requirement("nginx-light", _command("nginx")),),
    "ci": (Requirement("make", _command("make")),),
}


def _docker_desktop() -> bool:
    """A docker CLI talking to an engine we cannot see as a process (Desktop, remote)."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass(frozen=True)
class Machine:
    """The facts the decision depends on (gathered by `probe`, made up in unit tests)."""

    euid: int
    sudo: Optional[str]  # path of sudo, if installed and usable (no password, or a terminal)
    apt: bool  # apt-get exists (Debian/Ubuntu)
    systemd: bool  # systemd is PID 1 (apt may start services; otherwise it must not)
    python: Tuple[int, int] = MIN_PYTHON


@dataclass(frozen=True)
class Plan:
    """What to do: nothing, run `command`, or stop with `message` (one line)."""

    packages: Tuple[str, ...] = ()
    command: Tuple[str, ...] = ()
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.message


def install_script(packages: Sequence[str], systemd: bool) -> str:
    """The shell run as root: apt-get update + install, without starting services on a
    machine that has no init system to manage them (CI containers and VMs like this one)."""
    pkgs = " ".join(shlex.quote(p) for p in packages)
    guard = ""
    if not systemd:
        guard = ("[ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d"
                 " && chmod +x /usr/sbin/policy-rc.d && trap 'rm -f /usr/sbin/policy-rc.d' EXIT; }; ")
    return (f"set -e; export DEBIAN_FRONTEND=noninteractive; {guard}"
            f"apt-get update -qq; apt-get install -y -qq --no-install-recommends {pkgs} >/dev/null")


def decide(missing: Sequence[str], machine: Machine) -> Plan:
    """Missing packages + the machine -> the command to run, or the line to print."""
    if machine.python < MIN_PYTHON:
        have, need = ".".join(map(str, machine.python)), ".".join(map(str, MIN_PYTHON))
        return Plan(message=f"python3 is {have}; this repository needs Python {need}+: install "
                            f"python{need} and python{need}-venv, then run make with PYTHON=python{need}")
    packages = tuple(missing)
    if not packages:
        return Plan()
    if not machine.apt:
        return Plan(packages, message=f"missing {', '.join(packages)} and this machine has no apt-get: "
                                      "install Docker (Docker Desktop on macOS) and a Python with venv, then retry")
    script = install_script(packages, machine.systemd)
    if machine.euid == 0:
        return Plan(packages, command=("sh", "-c", script))
    if machine.sudo:
        return Plan(packages, command=(machine.sudo, "sh", "-c", script))
    return Plan(packages, message=f"missing {' '.join(packages)}; as root run: "
                                  f"apt-get update && apt-get install -y {' '.join(packages)}")


def missing_packages(needs: Sequence[str], machine: Machine) -> List[str]:
    debootstraps = machine.apt and machine.euid == 0
    found: List[str] = []
    for need in needs:
        for req in NEEDS[need]:
            if (debootstraps or not req.image_build) and req.package not in found and not req.present():
                found.append(req.package)
    return found


def usable_sudo() -> Optional[str]:
    """sudo when it can work here: without a password, or with a terminal to ask for one."""
    sudo = shutil.which("sudo")
    if not sudo or os.geteuid() == 0:
        return sudo
    if sys.stdin.isatty():
        return sudo
    try:
        ok = subprocess.run([sudo, "-n", "true"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return sudo if ok else None


def probe() -> Machine:
    return Machine(euid=os.geteuid(), sudo=usable_sudo(), apt=bool(shutil.which("apt-get")),
                   systemd=os.path.isdir("/run/systemd/system"), python=sys.version_info[:2])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/bootstrap.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("needs", nargs="+", choices=sorted(NEEDS), metavar="NEED")
    parser.add_argument("--dry-run", action="store_true", help="print the decision, install nothing")
    args = parser.parse_args(argv)
    machine = probe()
    plan = decide(missing_packages(args.needs, machine), machine)
    if not plan.ok:
        print(f"bootstrap: {plan.message}", file=sys.stderr)
        return 1
    if not plan.packages:
        return 0
    how = "as root" if machine.euid == 0 else "through sudo"
    if args.dry_run:
        print(f"bootstrap: would install {' '.join(plan.packages)} {how}: {shlex.join(plan.command)}")
        return 0
    print(f"bootstrap: installing {' '.join(plan.packages)} {how} (apt-get; about 30 s) ...", flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(plan.command)
    except KeyboardInterrupt:
        print("bootstrap: interrupted", file=sys.stderr)
        return 130
    if proc.returncode != 0:
        print(f"bootstrap: apt-get failed (exit {proc.returncode}) installing {' '.join(plan.packages)}; "
              f"its output is above", file=sys.stderr)
        return 1
    importlib.invalidate_caches()  # ensurepip appeared on disk after this process started
    still = missing_packages(args.needs, machine)
    if still:
        print(f"bootstrap: {' '.join(still)} still missing after apt-get install", file=sys.stderr)
        return 1
    print(f"bootstrap: installed {' '.join(plan.packages)} in {time.monotonic() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
