"""deploys/parts/tls.py: when certbot runs, with which arguments, and the renewal env."""

import json

from deploys.parts.tls import (
    LETSENCRYPT_STAGING,
    CertbotCertificate,
    acme_server,
    certbot_command,
    certificate_problem,
    renewal_drop_in,
)

PEBBLE = "https://172.20.0.2:14000/dir"
GOOD = {"names": ["music.example.com"], "days_left": 80, "server": PEBBLE}


def test_a_valid_certificate_for_exactly_the_name_needs_no_certbot():
    assert certificate_problem(GOOD, "music.example.com", PEBBLE) is None


def test_certbot_runs_when_missing_wrong_names_expired_or_other_server():
    assert certificate_problem(None, "music.example.com", PEBBLE) == "no certificate yet"
    assert "not exactly" in certificate_problem({**GOOD, "names": ["a", "music.example.com"]}, "music.example.com", PEBBLE)
    assert certificate_problem({**GOOD, "days_left": -1}, "music.example.com", PEBBLE) == "certificate expired"
    assert "came from" in certificate_problem(GOOD, "music.example.com", LETSENCRYPT_STAGING)


def test_staging_switch_replaces_the_directory():
    assert acme_server(PEBBLE, staging=False) == PEBBLE
    assert acme_server("https://acme-v02.api.letsencrypt.org/directory", staging=True) == LETSENCRYPT_STAGING


def test_certbot_command_webroot_server_email_hook_and_ca_bundle():
    cmd = certbot_command("music.example.com", "/var/www/acme", "ops@example.com", PEBBLE, "/etc/letsencrypt/ca.pem", False).get_raw_value()
    assert cmd.startswith("env REQUESTS_CA_BUNDLE=/etc/letsencrypt/ca.pem certbot certonly --non-interactive")
    for part in ("--webroot -w /var/www/acme", "--cert-name music.example.com -d music.example.com",
                 f"--server {PEBBLE}", "--email ops@example.com", "--deploy-hook 'systemctl reload nginx'",
                 "--keep-until-expiring"):
        assert part in cmd
    forced = certbot_command("m.example.com", "/w", "e@x", PEBBLE, None, True).get_raw_value()
    assert forced.startswith("certbot ") and "--force-renewal" in forced


def test_renewals_get_the_ca_bundle_through_a_certbot_service_drop_in():
    text = renewal_drop_in("/etc/letsencrypt/infra-acme-ca.pem")
    assert "[Service]\nEnvironment=REQUESTS_CA_BUNDLE=/etc/letsencrypt/infra-acme-ca.pem\n" in text


def test_fact_parses_the_host_script_output():
    fact = CertbotCertificate()
    assert fact.process([json.dumps(GOOD)]) == GOOD
    assert fact.process(['{"error": "FileNotFoundError"}']) is None
    assert "/etc/letsencrypt/live/" in fact.command("music.example.com")
