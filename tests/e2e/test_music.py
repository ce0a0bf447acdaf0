"""deploys/music.py applied to a disposable host, with dnsmasq answering the public names
and pebble as the ACME server; sample apps stand in for Music Assistant and the OAuth
server. Tests run in order and share the host (module scope)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl

import httpx
import pytest

from tests.apps.music_assistant.build import build_wheel
from tests.e2e.runner import apply, pyinfra
from tests.harness.fixtures import module_host, test_cluster, test_cluster_hosts  # noqa: F401

pytestmark = pytest.mark.e2e

HOST = "music-1"
MUSIC = "music.music.test"
OAUTH = "oauth.music.test"
SECRET = "alexa-e2e-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
ENV = {"ALEXA_CLIENT_SECRET": SECRET}
UNITS = ("music-assistant", "oauth-server")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    return {
        "v1": build_wheel(out / "v1", "1.0.0"),
        "v2": build_wheel(out / "v2", "1.1.0"),
        "broken": build_wheel(out / "broken", "1.2.0", "broken-1.2"),
    }


@pytest.fixture(scope="module")
def music(request, test_cluster):  # noqa: F811
    host = module_host(request, test_cluster, HOST, groups=["music", "native_vm"])
    for name in (MUSIC, OAUTH):
        test_cluster.set_record(name, host.address)
    return host


@pytest.fixture(scope="module")
def data(music, wheels, test_cluster):  # noqa: F811
    def make(wheel="v1", **extra):
        return {
            "music_public_name": MUSIC,
            "oauth_public_name": OAUTH,
            "oauth_server_src": "tests/apps/oauth_server",
            "music_assistant_wheel": str(wheels[wheel]),
            "music_assistant_pip_args": ["--no-index"],
            "music_external_address": music.address,
            "music_external_ca_file": str(test_cluster.acme_root_file()),
            "nginx_listen_ipv6": False,
            "health_timeout_s": 20,
            **extra,
        }

    return make


def deploy(data, **kwargs):
    return apply("deploys/music.py", limit=HOST, env=ENV, data=data, **kwargs)


def https(test_cluster, host, name, path="/", method="GET", **kwargs):  # noqa: F811
    """HTTPS to the host's address with SNI/Host `name`, trusting pebble's root."""
    with httpx.Client(verify=test_cluster.acme_ssl_context(), timeout=10) as client:
        return client.request(
            method, f"https://{host.address}{path}", headers={"Host": name},
            extensions={"sni_hostname": name}, **kwargs,
        )


def version(host) -> str:
    out = host.exec("curl -fsS http://127.0.0.1:8095/").stdout
    return json.loads(out)["version"]


def data_checksums(host) -> dict:
    out = host.exec("cd /opt/music-assistant/data && find . -type f ! -name starts | sort | xargs -r sha256sum").stdout
    return dict(line.split()[::-1] for line in out.splitlines())


def test_full_deploy_then_second_apply_changes_nothing(music, data):
    first = deploy(data())
    assert SECRET not in first.output
    second = deploy(data())
    assert second.changed == [], second.changed
    assert SECRET not in second.output


def test_units_enabled_active_and_hardened(music):
    t = music.testinfra()
    for unit in UNITS:
        service = t.service(unit)
        assert service.is_enabled and service.is_running
        out = music.exec(f"systemd-analyze security {unit}.service --no-pager | tail -1").stdout
        score = float(out.split("exposure level for")[1].split(":")[1].split()[0])
        assert score <= 2.0, out
    assert t.service("nginx").is_running and t.service("certbot.timer").is_running
    assert t.service("music-health-check.timer").is_enabled


def test_backends_loopback_only_nginx_public(music):
    t = music.testinfra()
    for port in (8095, 8096):
        listeners = [s for s in t.socket.get_listening_sockets() if s.endswith(f":{port}")]
        assert listeners and all("127.0.0.1" in s for s in listeners), listeners
    assert t.socket("tcp://0.0.0.0:80").is_listening
    assert t.socket("tcp://0.0.0.0:443").is_listening


def test_secret_only_in_the_0600_env_file(music):
    t = music.testinfra()
    env = t.file("/etc/oauth-server/oauth-server.env")
    assert env.mode == 0o600 and env.user == "root"
    assert SECRET in env.content_string
    for unit in UNITS:
        assert SECRET not in t.file(f"/etc/systemd/system/{unit}.service").content_string
    health = json.loads(music.exec("curl -fsS http://127.0.0.1:8096/health").stdout)
    assert health["secret_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()


def test_certificates_from_pebble_and_https(music, test_cluster):  # noqa: F811
    """Issued by pebble for both names, served by nginx, and renewable. (`renew --dry-run`
    switches to Let's Encrypt staging unless --server is given, so give pebble's; and
    without a TTY certbot first sleeps up to 8 minutes unless told not to.)"""
    for name in (MUSIC, OAUTH):
        response = https(test_cluster, music, name, "/health" if name == OAUTH else "/")
        assert response.status_code == 200
        cert = ssl.DER_cert_to_PEM_cert(_peer_cert(music.address, name))
        assert cert
        issuer = music.exec(f"openssl x509 -noout -issuer -in /etc/letsencrypt/live/{name}/cert.pem").stdout
        assert "Pebble" in issuer or "pebble" in issuer.lower(), issuer
    renew = music.exec(
        f"REQUESTS_CA_BUNDLE=/etc/letsencrypt/infra-acme-ca.pem certbot renew --dry-run "
        f"--no-random-sleep-on-renew --server {test_cluster.acme_directory}", check=False, timeout=300
    )
    assert renew.returncode == 0, renew.stdout + renew.stderr


def _peer_cert(address, name) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, 443), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=name) as tls:
            return tls.getpeercert(binary_form=True)


def test_http_redirects_and_alexa_endpoints(music, test_cluster):  # noqa: F811
    response = httpx.get(f"http://{music.address}/some/path?x=1", headers={"Host": MUSIC}, timeout=10)
    assert response.status_code == 301
    assert response.headers["location"] == f"https://{MUSIC}/some/path?x=1"
    authorize = https(test_cluster, music, OAUTH, "/alexa/authorize?client_id=alexa-skill&redirect_uri=https://x.test/cb&state=s")
    assert authorize.status_code == 302
    token = https(test_cluster, music, OAUTH, "/alexa/token", method="POST",
                  data={"client_id": "alexa-skill", "client_secret": SECRET})
    assert token.status_code == 200 and token.json()["access_token"]


def test_websocket_handshake_through_nginx(music, test_cluster):  # noqa: F811
    key = base64.b64encode(os.urandom(16)).decode()
    context = test_cluster.acme_ssl_context()
    with socket.create_connection((music.address, 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=MUSIC) as tls:
            tls.sendall(
                (f"GET /ws HTTP/1.1\r\nHost: {MUSIC}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += tls.recv(1024)
            assert head.startswith(b"HTTP/1.1 101"), head
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            assert b"Sec-WebSocket-Accept: " + accept in head
            mask, payload = os.urandom(4), b"hello"
            tls.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            frame = tls.recv(1024)
            assert frame[0] == 0x81 and frame[2:] == payload


def test_health_check_script_reports_success(music):
    out = music.exec("/opt/music-assistant/bin/music-health-check --status", check=False)
    assert "SUCCESS CRITERIA MET" in out.stdout, out.stdout


def test_upgrade_restarts_and_keeps_data(music, data):
    music.exec("head -c 4096 /dev/urandom > /opt/music-assistant/data/library.db")
    before = data_checksums(music)
    run = deploy(data("v2"))
    assert version(music) == "1.1.0"
    assert any("Restart music-assistant" in name for name in run.changed)
    assert data_checksums(music) == before
    assert music.exec("ls /opt/music-assistant/backups/ | wc -l").stdout.strip() != "0"


def test_broken_upgrade_rolls_back_and_fails(music, data):
    before = data_checksums(music)
    run = pyinfra("deploys/music.py", limit=HOST, env=ENV, data=data("broken"))
    assert run.returncode != 0
    assert "Rolled back music-assistant" in run.output
    assert version(music) == "1.1.0"
    assert data_checksums(music) == before


def test_config_rejected_by_nginx_t_is_rolled_back(music, data, test_cluster):  # noqa: F811
    """A site change that `nginx -t` rejects (here: a broken file an admin left in conf.d)
    fails the run, puts the previous site back and leaves nginx serving it."""
    site = "/etc/nginx/sites-available/music-assistant"
    before = music.exec(f"sha256sum {site}").stdout
    conflict = "this_is_not_a_directive on;\n"
    music.write_file("/etc/nginx/conf.d/zz-conflict.conf", conflict)
    try:
        run = pyinfra("deploys/music.py", limit=HOST, env=ENV, data=data("v2", music_denied_paths=["/internal/"]))
    finally:
        music.exec("rm -f /etc/nginx/conf.d/zz-conflict.conf")
    assert run.returncode != 0
    assert "nginx -t rejected the new config" in run.output, run.output[-3000:]
    assert music.exec(f"sha256sum {site}").stdout == before
    assert music.exec("nginx -t", check=False).returncode == 0
    assert https(test_cluster, music, MUSIC, "/internal/x").status_code != 403  # old site still live
    deploy(data("v2", music_denied_paths=["/internal/"]))  # without the conflict it applies
    assert https(test_cluster, music, MUSIC, "/internal/x").status_code == 403
    deploy(data("v2"))


def test_dns_elsewhere_stops_before_any_change(music, data, test_cluster):  # noqa: F811
    test_cluster.set_record(MUSIC, "192.0.2.10")
    try:
        run = pyinfra("deploys/music.py", limit=HOST, env=ENV, data=data("v2"))
    finally:
        test_cluster.set_record(MUSIC, music.address)
    assert run.returncode != 0
    assert f"{MUSIC} resolves to 192.0.2.10" in run.output, run.output[-3000:]
    assert "Beginning operation run" not in run.output  # stopped at prepare: nothing executed


def test_removal_keeps_data(music, data):
    before = data_checksums(music)
    deploy(data(music_state="absent"))
    t = music.testinfra()
    for unit in UNITS:
        assert not t.file(f"/etc/systemd/system/{unit}.service").exists
        assert not t.service(unit).is_running
    assert not t.file("/etc/nginx/sites-enabled/music-assistant").exists
    assert not t.file("/opt/oauth-server").exists
    assert not t.file("/opt/music-assistant/releases").exists
    assert data_checksums(music) == before
    assert t.service("nginx").is_running
