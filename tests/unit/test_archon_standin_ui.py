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
