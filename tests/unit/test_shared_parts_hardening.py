"""Shared parts hardened for issue 10 (every deploy gains them): unit values, service
accounts, restarts, nginx access control and default site, ACME e-mail, ufw per-network
rules."""

from __future__ import annotations

import base64
import hashlib

import pytest

from deploys.errors import ConfigError
from deploys.parts.firewall import normalise_rules, rule_argv, ufw_commands
from deploys.parts.nginx import render_htpasswd, render_site
from deploys.parts.service import ServiceSpec, account_problem, render_unit, restart_command
from deploys.parts.tls import acme_email_problem, placeholder_email
from facts.firewall import parse_ufw
from facts.nginx import default_site_removable, parse_default_site

BASE = {"name": "app", "exec_start": "/opt/app/venv/bin/app", "user": "app", "working_dir": "/opt/app"}


@pytest.mark.parametrize("key,value", [
    ("exec_start", "/bin/app\nExecStartPre=/bin/rm -rf /"),
    ("description", "x\rUser=root"),
    ("env", {"A": "1\nUser=root"}),
    ("extra", {"Nice": "5\n[Install]"}),
    ("working_dir", "/opt/app\tx"),
])
def test_control_characters_in_unit_values_are_refused(key, value):
    with pytest.raises(ConfigError, match="control character"):
        ServiceSpec.from_data({**BASE, key: value})


def test_address_families_are_service_data():
    default = render_unit(ServiceSpec.from_data(BASE)).getvalue()
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n" in default
    netlink = ServiceSpec.from_data({**BASE, "address_families": ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]})
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n" in render_unit(netlink).getvalue()
    with pytest.raises(ConfigError, match="address_families"):
        ServiceSpec.from_data({**BASE, "address_families": ["netlink"]})


def test_root_and_login_accounts_are_never_turned_into_service_accounts():
    users = {"root": {"uid": 0}, "jason": {"uid": 1000}, "music-assistant": {"uid": 998}}
    assert "is root" in account_problem("root", users)
    assert "existing login account (uid 1000)" in account_problem("jason", users)
    assert account_problem("music-assistant", users) is None
    assert account_problem("new-user", users) is None


def test_a_requested_restart_clears_the_start_limit_first():
    assert restart_command("x.service") == "systemctl reset-failed x.service 2>/dev/null; systemctl restart x.service"
    assert "health gate decides" in restart_command("x.service", "gate")


def _verify_ssha(line: str, password: str) -> bool:
    raw = base64.b64decode(line.split("{SSHA}", 1)[1])
    digest, salt = raw[:20], raw[20:]
    return hashlib.sha1(password.encode() + salt).digest() == digest


def test_htpasswd_is_salted_stable_and_verifies():
    first = render_htpasswd({"music": "s3cret pass"}, "music-assistant")
    assert first == render_htpasswd({"music": "s3cret pass"}, "music-assistant")  # idempotent
    assert "s3cret" not in first and first.startswith("music:{SSHA}")
    assert _verify_ssha(first.strip(), "s3cret pass") and not _verify_ssha(first.strip(), "wrong")
    assert first != render_htpasswd({"music": "s3cret pass"}, "studio")  # salt differs per site
    with pytest.raises(ConfigError, match="user name"):
        render_htpasswd({"a:b": "x"}, "s")


def _site(access):
    vhost = {"server_name": "m.test", "upstream": "127.0.0.1:8095", "access": access}
    return render_site("s", [vhost], "/var/www/acme", tls_names=["m.test"])


def test_nginx_access_control_basic_auth_and_allow_list():
    auth = _site({"auth_file": "/etc/nginx/infra-auth/s.htpasswd", "realm": "Music Assistant"})
    assert 'auth_basic "Music Assistant";' in auth and "auth_basic_user_file /etc/nginx/infra-auth/s.htpasswd;" in auth
    assert "deny all;" not in auth and "satisfy" not in auth
    allow = _site({"allow": ["192.168.1.7/24", "10.0.0.1"]})
    assert "allow 192.168.1.0/24;" in allow and "allow 10.0.0.1/32;" in allow and "deny all;" in allow
    both = _site({"auth_file": "/etc/x", "allow": ["10.0.0.0/8"], "satisfy": "any"})
    assert "satisfy any;" in both
    http_block = auth.split("# --- m.test: HTTPS")[0]
    assert "auth_basic" not in http_block  # ACME challenges stay reachable


@pytest.mark.parametrize("access,match", [
    ({}, "needs auth_file and/or allow"),
    ({"allow": ["not-a-net"]}, "not an IP network"),
    ({"auth_file": "relative"}, "absolute path"),
    ({"auth_file": "/x", "realm": 'a"b'}, "realm"),
    ({"auth_file": "/x", "satisfy": "some"}, "satisfy"),
    ({"auth_file": "/x", "users": {}}, "unknown access keys"),
])
def test_nginx_access_control_refuses_bad_data(access, match):
    with pytest.raises(ConfigError, match=match):
        _site(access)


def test_default_site_is_removed_only_while_untouched():
    untouched = parse_default_site(["installed=yes", "link=/etc/nginx/sites-available/default", "md5=abc", "dpkg=abc"])
    assert default_site_removable(untouched) is True
    edited = parse_default_site(["installed=yes", "link=/etc/nginx/sites-available/default", "md5=abd", "dpkg=abc"])
    assert default_site_removable(edited) is False
    own_file = parse_default_site(["installed=yes", "link=FILE", "dpkg=abc"])
    assert default_site_removable(own_file) is False
    gone = parse_default_site(["installed=yes", "link=", "dpkg=abc"])
    assert default_site_removable(gone) is False
    assert default_site_removable(parse_default_site(["installed=no"])) is None


def test_placeholder_acme_email_is_refused_for_a_public_acme_server_only():
    le = "https://acme-v02.api.letsencrypt.org/directory"
    for email in ("ops@example.invalid", "me@example.com", "a@x.test", "", None):
        assert placeholder_email(email)
        assert "placeholder" in acme_email_problem(email, le, private_ca=False)
    assert acme_email_problem("ops@example.test", "https://pebble:14000/dir", private_ca=True) is None
    assert acme_email_problem("jason@jasonhollis.com", le, private_ca=False) is None


def test_ufw_rules_open_to_one_network():
    rules = normalise_rules([22, {"port": 8097, "from": "192.168.1.9/24"}])
    assert rules == ["22/tcp", "8097/tcp from 192.168.1.0/24"]
    assert rule_argv(rules[1]) == ["from", "192.168.1.0/24", "to", "any", "port", "8097", "proto", "tcp"]
    state = parse_ufw(["Status: active", "Default: deny (incoming), allow (outgoing), disabled (routed)",
                       "--- ufw show added ---", "ufw allow 22/tcp",
                       "ufw allow from 192.168.1.0/24 to any port 8097 proto tcp",
                       "ufw allow from 10.0.0.0/8 to any port 8097 proto tcp"])
    assert ufw_commands(state, rules, ["22/tcp"]) == [
        ["ufw", "delete", "allow", "from", "10.0.0.0/8", "to", "any", "port", "8097", "proto", "tcp"]]
    with pytest.raises(ConfigError):
        normalise_rules([{"port": 8097, "from": "everyone"}])
