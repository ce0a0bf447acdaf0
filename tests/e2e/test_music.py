"""deploys/music.py applied to disposable hosts (Debian 12 and Debian 13), with dnsmasq
answering the public names and pebble as the ACME server; the Music Assistant stand-in
(tests/apps/music_assistant, shaped like MA 2.3.0) and the OAuth sample stand in for the
apps. Tests run in order and share one host per Debian release (module scope); a second
host scans the ports from outside.

Debian 12 ships ffmpeg 5.1, older than MA's minimum (6): there the default is refused by
preflight, and the run goes on with `music_ffmpeg_min_major = 5` (MA starts and logs an
ERROR, which the health check reports). Debian 13 has ffmpeg 7.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl

import httpx
import pytest

from tests.apps.music_assistant.build import build_runtime_wheel, build_wheel
from tests.e2e.runner import apply, pyinfra
from tests.harness.fixtures import module_host, test_cluster, test_cluster_hosts  # noqa: F401

pytestmark = pytest.mark.e2e

MUSIC = "music.music.test"
OAUTH = "oauth.music.test"
SECRET = "alexa-e2e-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
PASSWORD = "web-e2e-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
ENV = {"ALEXA_CLIENT_SECRET": SECRET, "MUSIC_WEB_PASSWORD": PASSWORD}
AUTH = ("music", PASSWORD)
UNITS = ("music-assistant", "oauth-server")
USER_SETTINGS = {"server_id": "e2e-server-id", "providers": {"filesystem--x": {"domain": "filesystem_local"}},
                 "core": {"webserver": {"domain": "webserver", "values": {"base_url": "https://music.music.test"}}}}
OLD_FFMPEG = {"debian12": True, "debian13": False}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    return {
        "v1": build_wheel(out / "v1", "1.0.0", schema=1),
        "v2": build_wheel(out / "v2", "1.1.0", schema=2),
        "broken": build_wheel(out / "broken", "1.2.0", "broken-1.2", schema=3),
        "wheelhouse": build_runtime_wheel(out / "deps").parent,  # the [server] extra's wheels
    }


@pytest.fixture(scope="module")
def scanner(request, test_cluster):  # noqa: F811
    return module_host(request, test_cluster, "music-scan")


@pytest.fixture(scope="module", params=["debian12", "debian13"])
def music(request, test_cluster):  # noqa: F811
    host = module_host(request, test_cluster, f"music-{request.param[-2:]}", groups=["music", "native_vm"],
                       os=request.param)
    host.os_name = request.param
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
            "music_assistant_wheelhouse": str(wheels["wheelhouse"]),
            "music_assistant_pip_args": ["--no-index"],
            "music_external_address": music.address,
            "music_external_ca_file": str(test_cluster.acme_root_file()),
            "music_ffmpeg_min_major": 5 if OLD_FFMPEG[music.os_name] else 6,
            "nginx_listen_ipv6": False,
            "health_timeout_s": 20,
            **extra,
        }

    return make


def only_on(host, os_name: str) -> None:
    if host.os_name != os_name:
        pytest.skip(f"runs on {os_name} only (keeps the module lean)")


def deploy(music, data, **kwargs):
    return apply("deploys/music.py", limit=music.name, env=ENV, data=data, **kwargs)


def run(music, data):
    return pyinfra("deploys/music.py", limit=music.name, env=ENV, data=data)


def https(test_cluster, host, name, path="/", method="GET", **kwargs):  # noqa: F811
    """HTTPS to the host's address with SNI/Host `name`, trusting pebble's root."""
    with httpx.Client(verify=test_cluster.acme_ssl_context(), timeout=10) as client:
        return client.request(
            method, f"https://{host.address}{path}", headers={"Host": name},
            extensions={"sni_hostname": name}, **kwargs,
        )


def info(host) -> dict:
    return json.loads(host.exec("curl -fsS http://127.0.0.1:8095/info").stdout)


def library_schema(host) -> int:
    out = host.exec("python3 -c \"import sqlite3; print(sqlite3.connect('/opt/music-assistant/data/library.db')"
                    ".execute(\\\"select value from settings where key='version'\\\").fetchone()[0])\"").stdout
    return int(out)


def test_default_ffmpeg_check_names_old_ffmpeg(music, data):
    """Debian 12: ffmpeg 5.1 < MA's 6, refused before any change, naming the version."""
    only_on(music, "debian12")
    result = run(music, data(music_ffmpeg_min_major=6))
    assert result.returncode != 0
    assert "ffmpeg 5." in result.output and "older than 6" in result.output, result.output[-3000:]
    assert "Beginning operation run" not in result.output


def test_full_deploy_then_second_apply_changes_nothing(music, data):
    music.exec("mkdir -p /opt/music-assistant/data")
    music.write_file("/opt/music-assistant/data/settings.json", json.dumps(USER_SETTINGS))
    first = deploy(music, data())
    assert SECRET not in first.output and PASSWORD not in first.output
    second = deploy(music, data())
    assert second.changed == [], second.changed
    assert music.exec("ffmpeg -version").returncode == 0


def test_units_enabled_active_and_hardened(music):
    t = music.testinfra()
    for unit in UNITS:
        service = t.service(unit)
        assert service.is_enabled and service.is_running
        out = music.exec(f"systemd-analyze security {unit}.service --no-pager | tail -1").stdout
        score = float(out.split("exposure level for")[1].split(":")[1].split()[0])
        assert score <= 2.0, out
    families = music.exec("systemctl show -p RestrictAddressFamilies music-assistant").stdout
    assert "AF_NETLINK" in families, families
    assert "AF_NETLINK" not in music.exec("systemctl show -p RestrictAddressFamilies oauth-server").stdout
    assert t.service("nginx").is_running and t.service("certbot.timer").is_running
    assert t.service("music-health-check.timer").is_enabled


def test_settings_bind_loopback_and_keep_the_users_own(music):
    settings = json.loads(music.exec("cat /opt/music-assistant/data/settings.json").stdout)
    assert settings["core"]["webserver"]["values"]["bind_ip"] == "127.0.0.1"
    assert settings["core"]["webserver"]["values"]["base_url"] == "https://music.music.test"
    assert settings["core"]["streams"]["values"]["bind_ip"] == "127.0.0.1"
    assert settings["server_id"] == "e2e-server-id" and "filesystem--x" in settings["providers"]
    assert info(music)["server_id"] == "e2e-server-id"


def test_backends_loopback_only_and_scan_from_second_host(music, scanner):
    t = music.testinfra()
    for port in (8095, 8096, 8097):
        listeners = [s for s in t.socket.get_listening_sockets() if s.endswith(f":{port}")]
        assert listeners and all("127.0.0.1" in s for s in listeners), (port, listeners)
    ports = [22, 80, 443, 8095, 8096, 8097]
    probe = (
        "import socket,json,sys\nopen_=[]\nfor p in %r:\n    s=socket.socket(); s.settimeout(1.5)\n"
        "    try:\n        s.connect((sys.argv[1], p)); open_.append(p)\n    except OSError: pass\n"
        "    s.close()\nprint(json.dumps(open_))\n" % ports
    )
    scanner.write_file("/tmp/scan.py", probe)
    answered = json.loads(scanner.exec(f"python3 /tmp/scan.py {music.address}").stdout)
    assert answered == [22, 80, 443], answered
    ufw = music.exec("ufw status").stdout
    assert "Status: active" in ufw, ufw


def test_public_vhost_requires_credentials_and_serves_info(music, test_cluster):  # noqa: F811
    assert https(test_cluster, music, MUSIC, "/info").status_code == 401
    assert https(test_cluster, music, MUSIC, "/info", auth=("music", "wrong")).status_code == 401
    response = https(test_cluster, music, MUSIC, "/info", auth=AUTH)
    assert response.status_code == 200 and response.json()["server_version"] == "1.0.0"
    assert https(test_cluster, music, OAUTH, "/health").status_code == 200  # OAuth has its own auth
    htpasswd = music.testinfra().file("/etc/nginx/infra-auth/music-assistant.htpasswd")
    assert htpasswd.mode == 0o640 and htpasswd.group == "www-data" and PASSWORD not in htpasswd.content_string


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
    only_on(music, "debian12")
    for name in (MUSIC, OAUTH):
        response = https(test_cluster, music, name, "/health" if name == OAUTH else "/info", auth=AUTH)
        assert response.status_code == 200
        assert _peer_cert(music.address, name)
        issuer = music.exec(f"openssl x509 -noout -issuer -in /etc/letsencrypt/live/{name}/cert.pem").stdout
        assert "pebble" in issuer.lower(), issuer
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
    only_on(music, "debian12")
    response = httpx.get(f"http://{music.address}/some/path?x=1", headers={"Host": MUSIC}, timeout=10)
    assert response.status_code == 301
    assert response.headers["location"] == f"https://{MUSIC}/some/path?x=1"
    authorize = https(test_cluster, music, OAUTH, "/alexa/authorize?client_id=alexa-skill&redirect_uri=https://x.test/cb&state=s")
    assert authorize.status_code == 302
    token = https(test_cluster, music, OAUTH, "/alexa/token", method="POST",
                  data={"client_id": "alexa-skill", "client_secret": SECRET})
    assert token.status_code == 200 and token.json()["access_token"]


def test_websocket_through_nginx_with_credentials(music, test_cluster):  # noqa: F811
    key = base64.b64encode(os.urandom(16)).decode()
    basic = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
    context = test_cluster.acme_ssl_context()
    with socket.create_connection((music.address, 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=MUSIC) as tls:
            tls.sendall(
                (f"GET /ws HTTP/1.1\r\nHost: {MUSIC}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Authorization: Basic {basic}\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += tls.recv(4096)
            assert head.startswith(b"HTTP/1.1 101"), head
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            assert b"Sec-WebSocket-Accept: " + accept in head
            rest = head.split(b"\r\n\r\n", 1)[1]
            while len(rest) < 2 or len(rest) < 2 + rest[1]:
                rest += tls.recv(4096)
            assert rest[0] == 0x81 and b"server_version" in rest[2:2 + rest[1]]  # MA's info message


def test_health_check_script_reports_errors_it_finds(music):
    out = music.exec("/opt/music-assistant/bin/music-health-check --status", check=False).stdout
    if OLD_FFMPEG[music.os_name]:  # MA logs its ffmpeg ERROR at info priority: the scan finds it
        assert "FFMpeg version is too old" in out and "SUCCESS CRITERIA MET" not in out, out
    else:
        assert "SUCCESS CRITERIA MET" in out, out


def test_upgrade_restarts_takes_consistent_backup_and_keeps_data(music, data):
    only_on(music, "debian12")
    music.exec("python3 -c \"import sqlite3; d=sqlite3.connect('/opt/music-assistant/data/library.db');"
               " d.execute(\\\"insert into tracks(name) values ('e2e-track')\\\"); d.commit()\"")
    run_ = deploy(music, data("v2"))
    assert info(music)["server_version"] == "1.1.0"
    assert any("Restart music-assistant" in name for name in run_.changed)
    assert library_schema(music) == 2
    backups = music.exec("ls -1 /opt/music-assistant/backups/").stdout.split()
    assert backups, backups
    check = music.exec(
        f"mkdir -p /tmp/b && tar -C /tmp/b -xzf /opt/music-assistant/backups/{backups[-1]} && python3 -c \""
        "import sqlite3; d=sqlite3.connect('/tmp/b/library.db'); print(d.execute('pragma integrity_check')"
        ".fetchone()[0], d.execute('select count(*) from tracks').fetchone()[0])\"").stdout.split()
    assert check == ["ok", "1"], check


def test_crash_looping_release_rolls_back_code_and_data_then_next_apply_is_clean(music, data):
    """The broken release migrates library.db to schema 3, then exits 1 again and again
    (RestartSec=1 so the start limit is hit within the gate). The rollback restores the
    pre-upgrade data, clears the start limit and starts the previous release."""
    before = info(music)["server_version"]
    schema = library_schema(music)
    result = run(music, data("broken", music_assistant_restart_sec=1))
    assert result.returncode != 0
    assert "Rolled back music-assistant" in result.output, result.output[-3000:]
    assert "Unit music-assistant.service" in result.output and "journal" in result.output.lower()
    assert info(music)["server_version"] == before
    assert library_schema(music) == schema
    deploy(music, data("v2" if before == "1.1.0" else "v1"))  # not wedged by the start limit
    assert info(music)["server_version"] == before


def test_config_rejected_by_nginx_t_is_rolled_back(music, data, test_cluster):  # noqa: F811
    """A site change that `nginx -t` rejects (here: a broken file an admin left in conf.d)
    fails the run, puts the previous site back and leaves nginx serving it."""
    only_on(music, "debian12")
    site = "/etc/nginx/sites-available/music-assistant"
    before = music.exec(f"sha256sum {site}").stdout
    music.write_file("/etc/nginx/conf.d/zz-conflict.conf", "this_is_not_a_directive on;\n")
    try:
        result = run(music, data("v2", music_denied_paths=["/internal/"]))
    finally:
        music.exec("rm -f /etc/nginx/conf.d/zz-conflict.conf")
    assert result.returncode != 0
    assert "nginx -t rejected the new config" in result.output, result.output[-3000:]
    assert music.exec(f"sha256sum {site}").stdout == before
    assert music.exec("nginx -t", check=False).returncode == 0
    assert https(test_cluster, music, MUSIC, "/internal/x", auth=AUTH).status_code != 403  # old site still live
    deploy(music, data("v2", music_denied_paths=["/internal/"]))
    assert https(test_cluster, music, MUSIC, "/internal/x", auth=AUTH).status_code == 403
    deploy(music, data("v2"))


def test_dns_elsewhere_stops_before_any_change(music, data, test_cluster):  # noqa: F811
    only_on(music, "debian12")
    test_cluster.set_record(MUSIC, "192.0.2.10")
    try:
        result = run(music, data("v2"))
    finally:
        test_cluster.set_record(MUSIC, music.address)
    assert result.returncode != 0
    assert f"{MUSIC} resolves to 192.0.2.10" in result.output, result.output[-3000:]
    assert "Beginning operation run" not in result.output  # stopped at prepare: nothing executed


def test_removal_keeps_data(music, data):
    only_on(music, "debian12")
    before = music.exec("sha256sum /opt/music-assistant/data/library.db").stdout
    deploy(music, data(music_state="absent"))
    t = music.testinfra()
    for unit in UNITS:
        assert not t.file(f"/etc/systemd/system/{unit}.service").exists
        assert not t.service(unit).is_running
    assert not t.file("/etc/nginx/sites-enabled/music-assistant").exists
    assert not t.file("/opt/oauth-server").exists
    assert not t.file("/opt/music-assistant/releases").exists
    assert music.exec("sha256sum /opt/music-assistant/data/library.db").stdout == before
    assert t.service("nginx").is_running
