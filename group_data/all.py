"""Defaults for every host. Groups override these: kind < system < environment < host."""

# Operating systems a deploy accepts: distribution id -> accepted VERSION_IDs.
supported_os = {"ubuntu": ["22.04", "24.04"], "debian": ["12"]}

# Oldest python3 the host may have (venvs are built from it); None skips the check.
preflight_python_min = "3.10"

# Preflight refuses to start below these (free MiB on / and available memory MiB).
preflight_min_disk_mb = 1024
preflight_min_memory_mb = 256

# Check that public names resolve to this host before anything changes (issue TLS only then).
preflight_check_dns = True

# Addresses the public names must resolve to. Empty: the host's own interface addresses.
# Set it for hosts behind NAT, where the public address is not on an interface.
expected_addresses = []

# Health gates: how long to wait for a service to become healthy, and how often to look.
health_timeout_s = 60
health_interval_s = 2

# systemd restart policy for application services.
service_restart = "on-failure"
service_restart_sec = 5

# Hardening knobs for units (see templates/etc/systemd/system/service.j2).
# PrivateUsers= fails inside containers (test hosts), so it is opt-in.
service_private_users = False
# Off for apps that JIT or use W+X memory (some native extensions).
service_memory_deny_write_execute = True

# ACME (Let's Encrypt) for TLS. Environments override the directory (staging, pebble).
acme_directory = "https://acme-v02.api.letsencrypt.org/directory"
acme_email = "ops@example.invalid"
# Local CA bundle that certbot must trust to talk to the ACME server (tests only).
acme_ca_bundle = None

# One deploy at a time per host (deploys/parts/deploy_lock.py): a second run waits this
# long for the lock, then refuses naming its holder. Every run is recorded in the host's
# audit log (/var/log/infra/deploys.jsonl; ~/.local/state/infra/ without root).
deploy_lock = True
deploy_lock_wait_s = 30

# Release commands of deploys/parts/releases.py (youtube today): `make releases` sets
# release_action=releases, `make rollback [TO=id]` release_action=rollback and release_to.
release_action = None
release_to = None
