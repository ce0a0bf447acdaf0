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
import re
import socket
import ssl
import time

import httpx
import pytest

from tests.apps.music_assistant.build import build_runtime_wheel, build_wheel
from tests.e2e.faults import fault_points, kill_points_among, planned_changes, planned_position, run_until_operation
from tests.e2e.ports import open_tcp_ports
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


TIMEOUT = 1800  # a first apply on a machine shared by several test runs (load 30) took 15+ min


def deploy(music, data, **kwargs):
    return apply("deploys/music.py", limit=music.name, env=ENV, data=data, timeout=TIMEOUT, **kwargs)


def run(music, data):
    return pyinfra("deploys/music.py", limit=music.name, env=ENV, data=data, timeout=TIMEOUT)


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
    assert open_tcp_ports(scanner, music.address) == [22, 80, 443]  # every TCP port, from another host
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
    assert any("Music Assistant release" in name and name.endswith(" live (health-gated, rolled back with its data on failure)")
               for name in run_.changed), run_.changed
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
    assert "rolled back to app" in result.output, result.output[-3000:]
    assert "Unit music-assistant.service" in result.output and "journal" in result.output.lower()
    assert info(music)["server_version"] == before
    assert library_schema(music) == schema
    deploy(music, data("v2" if before == "1.1.0" else "v1"))  # not wedged by the start limit
    assert info(music)["server_version"] == before


def live_release(listing: str, title: str) -> str:
    """The live id in `make releases` output, in the section of `title`."""
    section = listing[listing.index(f"{title} releases"):]
    return re.search(r"\* ([0-9a-f]{12}) ", section).group(1)


def test_releases_and_rollback_with_the_data_of_that_release(music, data):
    """`make releases` lists both series; `make rollback` puts Music Assistant's previous
    release back with the data backed up while it was live, and records what it started:
    applying that version next changes nothing. TO=<id> goes forward again."""
    only_on(music, "debian12")
    assert info(music)["server_version"] == "1.1.0" and library_schema(music) == 2
    listing = deploy(music, data("v2", release_action="releases")).output
    assert "OAuth server releases" in listing, listing[-3000:]
    newer = live_release(listing, "Music Assistant")
    back = deploy(music, data("v2", release_action="rollback"))
    assert "restored from" in back.output, back.output[-3000:]
    assert info(music)["server_version"] == "1.0.0" and library_schema(music) == 1
    assert deploy(music, data("v1")).changed == []  # no stale restart record, no rebuild
    deploy(music, data("v1", release_action="rollback", release_to=newer))
    assert info(music)["server_version"] == "1.1.0" and library_schema(music) == 2
    assert deploy(music, data("v2")).changed == []


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


# ------------------------------------------------------------------ SIGKILL of pyinfra (issue 15.6)

DATA_SUMS = (
    "python3 -c \"import hashlib, json, sqlite3; d = '/opt/music-assistant/data'; "
    "rows = sqlite3.connect(d + '/library.db').execute('select * from tracks order by item_id').fetchall(); "
    "s = json.load(open(d + '/settings.json')); "
    "user = [s.get('server_id'), s.get('providers'), s['core']['webserver']['values'].get('base_url')]; "
    "print(hashlib.sha256(json.dumps([rows, user]).encode()).hexdigest())\""
)
APP_DIRS = "/opt/music-assistant/app /opt/music-assistant/releases /opt/music-assistant/venv /opt/oauth-server"


def data_sum(host) -> str:
    """sha256 over MA's library rows and the user's own settings (server_id, providers,
    base_url): what a run, killed or not, must never lose."""
    return host.exec(DATA_SUMS).stdout.strip()


def killed_then_converges(music, data, wheel: str, point: int) -> str:
    """SIGKILL pyinfra as it starts operation `point`; the re-run converges, the one after
    changes nothing; returns the operation that was starting."""
    killed = run_until_operation("deploys/music.py", point, limit=music.name, env=ENV, data=data(wheel))
    assert killed.killed, f"operation {point} never started:\n{killed.output[-2000:]}"
    print(f"[faults] killed at {point}: {killed.operation}")
    deploy(music, data(wheel))
    assert deploy(music, data(wheel)).changed == [], f"second re-run after a kill at {killed.operation}"
    return killed.operation


def test_killed_first_deploy_converges_and_keeps_the_users_data(music, data):
    """The app's first deploy onto a host with the user's data (nginx, certificates and
    packages stay: their first runs are the hello fault tests' and the full deploy's)."""
    only_on(music, "debian13")
    deploy(music, data("v1"))
    music.exec("python3 -c \"import sqlite3; d=sqlite3.connect('/opt/music-assistant/data/library.db');"
               " d.execute(\\\"insert into tracks(name) values ('fault-track')\\\"); d.commit()\"")
    before = data_sum(music)
    wipe = (f"systemctl stop music-assistant oauth-server; rm -rf {APP_DIRS} /etc/systemd/system/music-assistant.service "
            "/etc/systemd/system/oauth-server.service /etc/oauth-server /var/lib/infra/restarts/music-assistant.service.inputs "
            "/var/lib/infra/restarts/oauth-server.service.inputs; systemctl daemon-reload")
    music.exec(wipe)
    points = kill_points_among(planned_changes("deploys/music.py", limit=music.name, env=ENV, data=data("v1")), fault_points(1))
    for point in points:
        operation = killed_then_converges(music, data, "v1", point)
        assert info(music)["server_version"] == "1.0.0", operation
        assert data_sum(music) == before, f"data changed after a kill at {operation}"
        music.exec(wipe)
    deploy(music, data("v1"))


def test_killed_upgrade_converges_and_keeps_the_data(music, data):
    only_on(music, "debian13")
    before = data_sum(music)
    points = kill_points_among(planned_changes("deploys/music.py", limit=music.name, env=ENV, data=data("v2")), fault_points(1))
    for point in points:
        wheel, version = ("v2", "1.1.0") if info(music)["server_version"] == "1.0.0" else ("v1", "1.0.0")
        operation = killed_then_converges(music, data, wheel, point)
        assert info(music)["server_version"] == version, operation
        assert data_sum(music) == before, f"data changed after a kill at {operation}"


SWITCH_UNIT = "music-release.service"  # deploys/music.py SWITCH_UNIT (music_switch_on_host)


def test_killed_during_the_host_side_switch_the_switch_goes_on(music, data):
    """pyinfra SIGKILLed once the switch runs on the host: the unit goes on (the service is
    not left stopped), the next apply waits for it and converges, the one after changes
    nothing, and the data is unchanged."""
    only_on(music, "debian13")
    before = data_sum(music)
    wheel, version = ("v2", "1.1.0") if info(music)["server_version"] == "1.0.0" else ("v1", "1.0.0")
    point = planned_position("deploys/music.py", "live (health-gated", limit=music.name, env=ENV, data=data(wheel))
    seen = []

    def switch_started():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if music.exec(f"systemctl is-active {SWITCH_UNIT}", check=False).stdout.strip() in ("active", "activating"):
                seen.append(True)
                return
            time.sleep(0.2)

    killed = run_until_operation("deploys/music.py", point, limit=music.name, env=ENV, data=data(wheel),
                                 before_kill=switch_started, timeout=TIMEOUT)
    assert killed.killed and seen, f"the switch unit never started:\n{killed.output[-3000:]}"
    print(f"[faults] killed during the host-side switch: {killed.operation}")
    state = music.exec(f"systemctl is-active {SWITCH_UNIT}", check=False).stdout.strip()
    history = music.exec("wc -l < /opt/music-assistant/releases/history.jsonl").stdout
    again = deploy(music, data(wheel))  # waits for the unit if it still runs
    print(f"[faults] unit {state} after the kill; the next apply waited: {'waiting for it before planning' in again.output}")
    assert info(music)["server_version"] == version
    assert int(music.exec("wc -l < /opt/music-assistant/releases/history.jsonl").stdout) >= int(history)
    last = json.loads(music.exec("tail -n 1 /opt/music-assistant/releases/history.jsonl").stdout)
    assert last["action"] == "deploy" and last["components"]["app"] == live_app(music), last
    assert deploy(music, data(wheel)).changed == [], "second re-run after a kill during the switch"
    assert data_sum(music) == before
    # The unit itself killed after its link switch (an OOM kill; a reboot), pyinfra too: the live
    # link is already the wanted release and the journal is left. The next apply's switch rolls
    # that switch back and switches again, so no journal is left for a later switch to act on
    # (found with the real MA 2.3.0: a later upgrade restored the data backed up before it).
    wheel, version = ("v2", "1.1.0") if version == "1.0.0" else ("v1", "1.0.0")
    cut_off = (f"timeout 300 sh -c 'until grep -qs \"phase.: .started\" {JOURNAL}; do sleep 0.05; done' "
               f"&& systemctl kill -s KILL {SWITCH_UNIT}")
    killed = run_until_operation("deploys/music.py", point, limit=music.name, env=ENV, data=data(wheel),
                                 before_kill=lambda: music.exec(cut_off, timeout=320), timeout=TIMEOUT)
    assert killed.killed and music.exec(f"test -e {JOURNAL}", check=False).returncode == 0, killed.output[-3000:]
    again = deploy(music, data(wheel))
    assert "cut off at phase 'started': rolling it back first" in again.output, again.output[-3000:]
    # the earlier switch is undone, this one goes on: not reported as a failing switch
    assert "this switch goes on" in again.output and "the switch fails" not in again.output, again.output[-3000:]
    # the switch imports the records library as root: no bytecode left beside it
    assert music.exec("test -e /opt/infra/lib/__pycache__", check=False).returncode != 0
    assert music.exec(f"test -e {JOURNAL}", check=False).returncode != 0 and info(music)["server_version"] == version
    last = json.loads(music.exec("tail -n 1 /opt/music-assistant/releases/history.jsonl").stdout)
    assert last["action"] == "deploy" and last["components"]["app"] == live_app(music), last
    assert deploy(music, data(wheel)).changed == [], "second re-run after the switch unit was killed"
    assert data_sum(music) == before


JOURNAL = "/opt/music-assistant/releases/.switch.json"  # release-switch's journal of a switch in progress


def live_app(host) -> str:
    return host.exec("basename $(readlink /opt/music-assistant/app)").stdout.strip()
