"""The test-host harness itself, on real containers: boot, SSH, DNS, ACME, Docker-in-host.

One session cluster; two hosts (a plain one and a docker one). Runs in ~15 s with cached
images.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile

import pytest

from tests.harness import Cluster, Host
from tests.harness.fixtures import test_cluster, test_cluster_hosts  # noqa: F401

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def host(test_cluster: Cluster) -> Host:  # noqa: F811
    return test_cluster.add_host("e2e-a", groups=["web", "music"], data={"role": "probe"})


@pytest.fixture(scope="module")
def docker_host(test_cluster: Cluster) -> Host:  # noqa: F811
    return test_cluster.add_host("e2e-docker", docker=True)


def test_host_boots_systemd_and_accepts_the_key_over_ssh(host: Host) -> None:
    remote = host.testinfra()  # paramiko over 127.0.0.1:<port> with .hosts/id_ed25519
    assert remote.check_output("whoami") == "root"
    assert remote.check_output("hostname") == host.name
    assert remote.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")
    assert remote.service("ssh").is_running


def test_hosts_are_cached_by_name(test_cluster: Cluster, host: Host) -> None:  # noqa: F811
    assert test_cluster.add_host("e2e-a", groups=["web", "music"]) is host


def test_remove_host_deletes_only_that_container_and_its_entries(test_cluster: Cluster,  # noqa: F811
                                                                  host: Host) -> None:
    extra = test_cluster.add_host("e2e-gone")
    test_cluster.remove_host("e2e-gone")
    inspect = subprocess.run(["docker", "inspect", extra.container_id], capture_output=True)
    assert inspect.returncode != 0, "the removed host's container still exists"
    inv = json.loads(test_cluster.inventory_path.read_text())
    assert [h["name"] for h in inv["hosts"] if h["name"] == "e2e-gone"] == []
    assert f":{extra.ssh_port}]" not in test_cluster.known_hosts_path.read_text()
    assert host.exec("true").returncode == 0  # the rest of the cluster is untouched


@pytest.mark.skipif(not shutil.which("ssh"), reason="no OpenSSH client on this machine")
def test_openssh_with_generated_ssh_config_and_known_hosts(test_cluster: Cluster,  # noqa: F811
                                                           host: Host) -> None:
    out = subprocess.run(["ssh", "-F", str(test_cluster.ssh_config_path), "-o", "BatchMode=yes",
                          host.name, "systemctl is-active ssh"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "active"


def test_pyinfra_connects_with_strict_known_hosts(test_cluster: Cluster,  # noqa: F811
                                                  host: Host) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pyinfra", "127.0.0.1", "--ssh-port", str(host.ssh_port),
         "--ssh-user", "root", "--ssh-key", host.key_path,
         "--data", f"ssh_known_hosts_file={test_cluster.known_hosts_path}",
         "--data", "ssh_strict_host_key_checking=yes", "-y", "exec", "--", "cat /etc/hostname"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert host.name in out.stdout + out.stderr


def test_inventory_json_shape(test_cluster: Cluster, host: Host) -> None:  # noqa: F811
    inv = json.loads(test_cluster.write_inventory().read_text())
    assert set(inv) == {"hosts", "dns", "acme", "network"}
    entry = next(h for h in inv["hosts"] if h["name"] == host.name)
    assert entry == {"name": "e2e-a", "container_id": host.container_id, "ssh_hostname": "127.0.0.1",
                     "ssh_port": host.ssh_port, "ssh_user": "root", "ssh_key": host.key_path,
                     "address": host.address, "groups": ["web", "music"],
                     "data": {"role": "probe"}}
    assert inv["dns"]["address"] == inv["acme"]["address"] == test_cluster.dns_address
    assert inv["acme"]["directory"] == f"https://{test_cluster.dns_address}:14000/dir"
    assert inv["network"]["name"].startswith("infra-test-") and inv["network"]["subnet"]


def test_dns_records_resolve_on_hosts_and_follow_changes(test_cluster: Cluster,  # noqa: F811
                                                          host: Host) -> None:
    name = "svc.e2e.test"
    test_cluster.set_record(name, "10.9.8.7")
    assert host.exec(f"getent hosts {name}").stdout.split()[0] == "10.9.8.7"
    test_cluster.set_record(name, host.address)
    assert host.exec(f"getent hosts {name}").stdout.split()[0] == host.address
    test_cluster.remove_record(name)
    assert host.exec(f"getent hosts {name}", check=False).returncode != 0


def test_hosts_still_resolve_outside_names_and_each_other(host: Host, docker_host: Host) -> None:
    assert host.exec(f"getent hosts {docker_host.name}").stdout.split()[0] == docker_host.address
    assert host.exec("getent hosts deb.debian.org").returncode == 0  # forwarded upstream


def test_pebble_directory_over_https_from_a_host(test_cluster: Cluster, host: Host) -> None:  # noqa: F811
    host.write_file("/etc/ssl/pebble-ca.pem", test_cluster.acme_ca_bundle.read_text())
    url = test_cluster.acme_directory
    directory = json.loads(host.exec(f"curl -sSf --cacert /etc/ssl/pebble-ca.pem {url}").stdout)
    assert directory["newAccount"].startswith(f"https://{test_cluster.dns_address}:14000/")
    untrusted = host.exec(f"curl -sS -o /dev/null {url}", check=False)
    assert untrusted.returncode != 0  # the CA bundle is what makes it work
    check = "import json, urllib.request as u; print(json.load(u.urlopen(%r))['newOrder'])" % url
    out = host.exec(["python3", "-c", check], env={"SSL_CERT_FILE": "/etc/ssl/pebble-ca.pem"})
    assert out.stdout.startswith("https://")


def test_pebble_issuing_root_is_fetchable(test_cluster: Cluster) -> None:  # noqa: F811
    pem = test_cluster.acme_root_pem()
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert test_cluster.acme_ssl_context().get_ca_certs()


def test_docker_host_runs_containers_with_compose_v1_and_v2(docker_host: Host) -> None:
    assert docker_host.exec("docker info --format '{{.ServerVersion}}'").stdout.strip()
    assert "v2." in docker_host.exec("docker compose version").stdout
    assert docker_host.exec("docker-compose version --short").stdout.startswith("1.")
    # an image made inside the host from its own dash + libs: no registry involved
    build = ("set -e; rm -rf /tmp/img; mkdir /tmp/img; cd /tmp/img; "
             "for f in /bin/dash $(ldd /bin/dash | grep -o '/[^ ]*'); do "
             "mkdir -p .$(dirname $f); cp -L $f .$f; done; "
             "tar -c . | docker import - e2e-dash >/dev/null; "
             "docker run --rm e2e-dash /bin/dash -c 'echo hello from a nested container'")
    assert docker_host.exec(build).stdout.strip() == "hello from a nested container"


def test_load_image_into_docker_host(docker_host: Host) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    tag = f"e2e-tiny:{docker_host.container_id[:12]}"
    image_id = subprocess.run(["docker", "import", "-", tag], input=data.getvalue(),
                              capture_output=True, check=True, timeout=60).stdout.decode().strip()
    try:
        docker_host.load_image(tag)
        assert docker_host.exec(f"docker image inspect {tag} --format '{{{{.Id}}}}'").returncode == 0
    finally:
        subprocess.run(["docker", "rmi", image_id], capture_output=True, timeout=60)
