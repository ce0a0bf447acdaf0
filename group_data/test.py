"""Disposable Docker test hosts (tests/harness). ACME and DNS helpers come from the
harness's inventory.json as host data (acme_directory, acme_ca_bundle, test_dns_server)."""

deploy_env = "test"
# Test hosts are small containers sharing the machine's disk.
preflight_min_disk_mb = 256
acme_email = "ops@example.test"

# Knobs of the compose smoke deploy that tests/e2e/test_archon.py writes (test-only).
smoke_image = None
smoke_greeting = None
smoke_extra = None
# Free-form label on harness self-test hosts (tests/e2e/test_harness.py).
role = None
