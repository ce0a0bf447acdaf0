"""tools/bootstrap.py decisions (what is missing -> which command) and the engine start.

The install itself is proven on a fresh Debian 12 test host in tests/e2e/test_bootstrap.py;
this machine's Docker engine is shared and cannot be uninstalled to try it here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.engine import start_action
from tools import bootstrap
from tools.bootstrap import Machine, Requirement, decide, install_script, missing_packages

REPO = Path(__file__).resolve().parents[2]
ROOT_NO_INIT = Machine(euid=0, sudo=None, apt=True, systemd=False)


def test_nothing_missing_means_nothing_to_do():
    plan = decide([], ROOT_NO_INIT)
    assert plan.ok and plan.command == () and plan.packages == ()


def test_root_installs_with_apt_and_starts_no_service_without_an_init_system():
    plan = decide(["docker.io", "debootstrap"], ROOT_NO_INIT)
    assert plan.ok and plan.command[:2] == ("sh", "-c")
    script = plan.command[2]
    assert "apt-get update -qq; apt-get install -y -qq --no-install-recommends docker.io debootstrap" in script
    assert "policy-rc.d" in script and "exit 101" in script  # no dockerd started by postinst
    assert "trap 'rm -f /usr/sbin/policy-rc.d' EXIT" in script  # removed again, only if ours
    assert script.index("policy-rc.d") < script.index("apt-get install")


def test_with_systemd_apt_may_start_the_engine_service():
    plan = decide(["docker.io"], Machine(euid=0, sudo=None, apt=True, systemd=True))
    assert "policy-rc.d" not in plan.command[2]


def test_a_user_with_sudo_installs_through_sudo():
    plan = decide(["python3-venv"], Machine(euid=1000, sudo="/usr/bin/sudo", apt=True, systemd=True))
    assert plan.ok and plan.command[:3] == ("/usr/bin/sudo", "sh", "-c")
    assert "DEBIAN_FRONTEND=noninteractive" in plan.command[3]  # sudo resets the environment


def test_a_user_without_sudo_gets_one_line_naming_the_command():
    plan = decide(["docker.io", "debootstrap"], Machine(euid=1000, sudo=None, apt=True, systemd=True))
    assert not plan.ok and plan.command == ()
    assert plan.message == ("missing docker.io debootstrap; as root run: "
                            "apt-get update && apt-get install -y docker.io debootstrap")
    assert "\n" not in plan.message


def test_no_apt_names_what_to_install_by_hand():
    plan = decide(["docker.io"], Machine(euid=501, sudo="/usr/bin/sudo", apt=False, systemd=False))
    assert not plan.ok and "no apt-get" in plan.message and "Docker Desktop" in plan.message


def test_too_old_python_is_named_before_anything_is_installed():
    plan = decide(["python3-venv"], Machine(euid=0, sudo=None, apt=True, systemd=False, python=(3, 10)))
    assert not plan.ok and plan.command == ()
    assert plan.message.startswith("python3 is 3.10; this repository needs Python 3.11+")
    assert "PYTHON=python3.11" in plan.message


def test_install_script_quotes_package_names():
    assert "'a b'" in install_script(["a b"], systemd=True)


def test_missing_checks_what_is_provided_and_debootstrap_only_where_it_is_used(monkeypatch):
    monkeypatch.setitem(bootstrap.NEEDS, "hosts", (
        Requirement("docker.io", lambda: False),
        Requirement("debootstrap", lambda: False, image_build=True),
    ))
    monkeypatch.setitem(bootstrap.NEEDS, "venv", (Requirement("python3-venv", lambda: True),))
    assert missing_packages(["venv", "hosts"], ROOT_NO_INIT) == ["docker.io", "debootstrap"]
    # a user's image is built FROM debian:bookworm (tests/harness/image.py build_method)
    user = Machine(euid=1000, sudo="/usr/bin/sudo", apt=True, systemd=True)
    assert missing_packages(["hosts"], user) == ["docker.io"]
    assert missing_packages(["hosts"], Machine(euid=0, sudo=None, apt=False, systemd=False)) == ["docker.io"]


def test_dry_run_on_this_machine_decides_without_installing():
    """The real probe: silent when nothing is missing, else one line; never a traceback."""
    out = subprocess.run([sys.executable, str(REPO / "tools/bootstrap.py"), "--dry-run",
                          "venv", "hosts", "unit", "ci"], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode in (0, 1) and "Traceback" not in text
    assert text == "" or (text.startswith("bootstrap: ") and text.count("\n") == 1)


def test_cli_refuses_an_unknown_need_without_a_traceback():
    out = subprocess.run([sys.executable, str(REPO / "tools/bootstrap.py"), "nope"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "invalid choice" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------ engine start

@pytest.mark.parametrize("euid, systemd, sudo, want", [
    (0, False, None, ["dockerd"]),  # CI / this VM: dockerd detached
    (0, True, None, ["systemctl", "start", "docker"]),
    (1000, True, "/usr/bin/sudo", ["/usr/bin/sudo", "systemctl", "start", "docker"]),
])
def test_engine_start_commands(euid, systemd, sudo, want):
    assert start_action(euid=euid, dockerd="/usr/sbin/dockerd", sudo=sudo, systemd=systemd,
                        info_error="Cannot connect to the Docker daemon") == want


def test_engine_messages_name_the_fix():
    no_root = start_action(euid=1000, dockerd="/usr/sbin/dockerd", sudo=None, systemd=True, info_error="")
    assert "`sudo systemctl start docker`" in no_root
    no_dockerd = start_action(euid=0, dockerd=None, sudo=None, systemd=False, info_error="")
    assert "`make bootstrap`" in no_dockerd
    denied = start_action(euid=1000, dockerd="/usr/sbin/dockerd", sudo="/usr/bin/sudo", systemd=True,
                          info_error="permission denied while trying to connect to the Docker daemon socket")
    assert "sudo usermod -aG docker $USER" in denied


# ------------------------------------------------------------------ make help

def test_every_make_target_has_a_help_line():
    """`make help` is generated from `##` comments: a target without one would be missing."""
    text = (REPO / "Makefile").read_text()
    targets = set()
    for line in text.splitlines():
        if line[:1].isalpha() and ":" in line and ":=" not in line and "?=" not in line \
                and not line.startswith((".", "$")) and "=" not in line.split(":")[0]:
            head, _, rest = line.partition(":")
            if rest.startswith("="):
                continue
            for target in head.split():
                targets.add((target, "## " in rest))
    undocumented = sorted(t for t, documented in targets if not documented)
    assert targets and undocumented == []
    helped = subprocess.run(["make", "-s", "-C", str(REPO), "help"], capture_output=True, text=True,
                            timeout=60).stdout
    assert {t for t, _ in targets} == {line.split()[0] for line in helped.splitlines() if line.strip()}
