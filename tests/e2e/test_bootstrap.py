"""tools/bootstrap.py on a fresh Debian 12 host, over SSH: the "fresh machine" path.

The base test-host image has no Docker engine, no debootstrap and no python3-venv, like a
fresh server. A user without sudo gets one line naming the command; a user with sudo gets
python3-venv and docker.io (apt-get through sudo; systemd then runs the engine; a user's
image is built FROM debian:bookworm, so no debootstrap); root also gets debootstrap; a
second run has nothing to do. This machine's shared engine cannot be uninstalled to try it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Cluster, Host
from tests.harness.fixtures import module_host, test_cluster, test_cluster_hosts  # noqa: F401

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HOST = "fresh-debian"
SCRIPT = "/opt/bootstrap.py"
NEEDED = ("python3-venv", "docker.io", "debootstrap")


@pytest.fixture(scope="module")
def fresh(request, test_cluster: Cluster) -> Host:  # noqa: F811
    host = module_host(request, test_cluster, HOST)
    host.exec("useradd -m -s /bin/bash dev && useradd -m -s /bin/bash plain && "
              "echo 'dev ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/dev && chmod 440 /etc/sudoers.d/dev")
    for user in ("dev", "plain"):
        host.exec(f"install -d -m 700 -o {user} -g {user} /home/{user}/.ssh && "
                  f"install -m 600 -o {user} -g {user} /dev/null /home/{user}/.ssh/authorized_keys && "
                  f"cat > /home/{user}/.ssh/authorized_keys", input=test_cluster.public_key + "\n")
    host.write_file(SCRIPT, (REPO / "tools" / "bootstrap.py").read_text(), mode="0755")
    return host


def ssh(host: Host, user: str):
    """testinfra over SSH (paramiko) as `user`, with the harness key."""
    import testinfra

    config = Path(host.key_path).parent / "testinfra_ssh_config"
    if not config.exists():
        config.write_text("Host 127.0.0.1\n  StrictHostKeyChecking no\n")
    return testinfra.get_host(f"paramiko://{user}@127.0.0.1:{host.ssh_port}",
                              ssh_identity_file=host.key_path, ssh_config=str(config))


def installed(host: Host) -> list[str]:
    out = host.exec("dpkg-query -W -f='${Package} ${Status}\\n' " + " ".join(NEEDED), check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.endswith("install ok installed")]


def test_a_fresh_host_lacks_what_demo_and_test_need(fresh):
    assert installed(fresh) == []
    assert fresh.exec("command -v dockerd || command -v debootstrap", check=False).returncode != 0


def test_without_sudo_one_line_names_the_exact_command(fresh):
    run = ssh(fresh, "plain").run(f"python3 {SCRIPT} venv hosts")
    assert run.rc == 1 and run.stdout == ""
    assert run.stderr == ("bootstrap: missing python3-venv docker.io; as root run: "
                          "apt-get update && apt-get install -y python3-venv docker.io\n")
    assert installed(fresh) == []


def test_with_sudo_it_installs_them_and_the_engine_runs(fresh):
    dev = ssh(fresh, "dev")
    run = dev.run(f"python3 {SCRIPT} venv hosts")
    assert run.rc == 0, run.stdout + run.stderr
    assert "bootstrap: installing python3-venv docker.io through sudo" in run.stdout
    assert "bootstrap: installed python3-venv docker.io in " in run.stdout
    assert sorted(installed(fresh)) == ["docker.io", "python3-venv"]
    assert dev.run("python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys; print(sys.prefix)'"
                   ).stdout.strip() == "/tmp/venv"
    assert dev.run("sudo docker info --format '{{.ServerVersion}}'").stdout.strip()  # systemd started it
    again = dev.run(f"python3 {SCRIPT} venv hosts")
    assert (again.rc, again.stdout, again.stderr) == (0, "", "")


def test_as_root_it_also_installs_debootstrap_for_the_image_build(fresh):
    root = fresh.testinfra()
    run = root.run(f"python3 {SCRIPT} venv hosts")
    assert run.rc == 0, run.stdout + run.stderr
    assert "bootstrap: installing debootstrap as root" in run.stdout
    assert sorted(installed(fresh)) == sorted(NEEDED)
    assert root.run("debootstrap --version").rc == 0
    again = root.run(f"python3 {SCRIPT} venv hosts")
    assert (again.rc, again.stdout, again.stderr) == (0, "", "")
