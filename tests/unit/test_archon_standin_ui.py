"""The UI stand-in's host check (tests/apps/archon/standin_http.py) against the rules of the
real one: archon-ui-main @ ecaece4 vite.config.ts allowedHosts + vite 5.4.19's host check.
The cases were checked against vite's own isHostAllowed by hand (node, in /tmp)."""

import pytest

from tests.apps.archon.standin_http import vite_allowed_hosts, vite_host_allowed

ENV = {"HOST": "archon.example.test", "VITE_ALLOWED_HOSTS": "studio.example.test, .corp.test,,"}


def test_allowed_hosts_as_vite_config_builds_them():
    assert vite_allowed_hosts(ENV) == ["localhost", "127.0.0.1", "::1", "archon.example.test",
                                       "studio.example.test", ".corp.test"]
    assert vite_allowed_hosts({"HOST": "localhost"}) == ["localhost", "127.0.0.1", "::1"]
    assert vite_allowed_hosts({}) == ["localhost", "127.0.0.1", "::1"]


@pytest.mark.parametrize(("host", "allowed"), [
    ("archon.example.test", True),          # HOST
    ("archon.example.test:443", True),      # the port is not part of the name
    ("studio.example.test", True),          # VITE_ALLOWED_HOSTS, trimmed
    ("corp.test", True), ("a.b.corp.test", True),  # a leading "." allows the domain and below
    ("xcorp.test", False),
    ("evil.example.test", False),           # not listed: 403
    ("ARCHON.example.test", False),         # exact, case-sensitive comparison
    ("10.1.2.3:3737", True), ("127.0.0.1", True), ("[::1]:3737", True), ("[fe80::1", False),
    ("localhost:3737", True), ("app.localhost", True),
    ("0.0.0.0", True),                      # server.host
])
def test_vite_host_check(host, allowed):
    assert vite_host_allowed(vite_allowed_hosts(ENV), host) is allowed


def test_without_the_deploys_names_the_site_name_is_blocked():
    assert not vite_host_allowed(vite_allowed_hosts({}), "archon.example.test")


def test_the_ui_stand_in_serves_listed_names_and_blocks_others():
    """The stand-in process itself, as archon-ui on a free loopback port."""
    import http.client
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(__file__).resolve().parents[1] / "apps/archon/standin_http.py"
    env = {**os.environ, **ENV, "STANDIN_NAME": "archon-ui", "STANDIN_PORTS": str(port), "ARCHON_UI_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def status(host):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/", headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()

    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.05)
        assert status("archon.example.test")[0] == 200
        assert status("studio.example.test:443")[0] == 200
        code, body = status("evil.example.test")
        assert code == 403 and body.startswith(b'Blocked request. This host ("evil.example.test") is not allowed.')
    finally:
        proc.kill()
        proc.wait(timeout=10)
