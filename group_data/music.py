"""Music Assistant + OAuth server (Alexa account linking) on a native VM.

deploys/music.py: preflight -> layout -> Music Assistant -> OAuth server -> nginx + TLS
-> health gates (rollback on a failed upgrade) -> health-check timer. Test overrides come
from the e2e tests as `--data`.
"""

# Secrets the deploy needs (from .env or the environment); checked before connecting.
# Every one of them lands in the OAuth server's EnvironmentFile (0600), never in a unit.
required_secrets = ["ALEXA_CLIENT_SECRET"]

# "present" deploys everything; "absent" is the plan's complete rollback: stop, disable
# and remove units, vhost and code (data stays unless music_remove_data).
music_state = "present"
# With music_state = "absent": also delete /opt/music-assistant/data (the config/database).
music_remove_data = False

# Public names (both must resolve to this host before anything changes).
music_public_name = "music.jasonhollis.com"
oauth_public_name = "oauth.dev.jasonhollis.com"

# Account the two services run as. The default is a dedicated system user; the plan
# used the login user "jason": set that here AND music_create_service_user = False.
music_service_user = "music-assistant"
# Create music_service_user as a nologin system user (never do this for a login user).
music_create_service_user = True

# apt packages the plan installs (nginx and certbot come from their own parts).
music_apt_packages = ["python3-venv", "python3-pip", "curl", "git", "ca-certificates"]

# --- Music Assistant -----------------------------------------------------------------
# Install root: releases/<id>/venv, app -> current release, venv -> app/venv, data/.
music_base_dir = "/opt/music-assistant"
# Music Assistant is not on PyPI: a pinned pip spec (git ref or wheel URL). The venv is
# rebuilt (new release) only when this spec (or the wheel below) changes.
music_assistant_spec = "music-assistant @ git+https://github.com/music-assistant/server.git@2.3.6"
# Local wheel file (on the machine running pyinfra) to upload and install instead of the
# spec; used by the tests (sample app) and for offline installs.
music_assistant_wheel = None
# Extra pip arguments (e.g. ["--no-index"] when installing a local wheel offline).
music_assistant_pip_args = []
# Command line; {base} is music_base_dir. The venv path is stable across releases.
music_assistant_exec_start = "{base}/venv/bin/mass --config {base}/data"
# Extra environment for Music Assistant (no secrets here: it ends up in the unit file).
music_assistant_env = {}
# Local port Music Assistant listens on (127.0.0.1 only; nginx is the public entry).
music_assistant_port = 8095
# Optional HAOS backup (.tar, local path) to import config.json from, once: an existing
# data/config.json on the host is never overwritten.
music_import_haos_backup = None

# --- OAuth server ----------------------------------------------------------------------
# Install root: releases/<id>/ (code + venv), current -> the live release, venv -> current/venv.
oauth_base_dir = "/opt/oauth-server"
# Local directory with the user's existing OAuth server: its code, requirements.txt and
# oauth_clients.json (.env files in it are never uploaded). Required.
oauth_server_src = None
# Local oauth_clients.json to use instead of the one in oauth_server_src.
oauth_clients_file = None
# Entry script inside the code directory.
oauth_entry = "oauth_server.py"
# Extra pip arguments for requirements.txt (e.g. an index URL or ["--no-index"]).
oauth_pip_args = []
# Local port of the OAuth server (127.0.0.1 only).
oauth_port = 8096
# Health endpoint of the OAuth server (JSON) and the field/value that means healthy.
oauth_health_path = "/health"
oauth_health_field = "status"
oauth_health_expect = "healthy"

# --- nginx + TLS -------------------------------------------------------------------------
# nginx site file name (sites-available/<name>).
music_nginx_site = "music-assistant"
# Directory nginx serves /.well-known/acme-challenge/ from (certbot's webroot).
acme_webroot = "/var/www/acme"
# Use Let's Encrypt's staging server (untrusted certificates, generous rate limits).
acme_staging = False
# Also listen on IPv6 ([::]:80/443).
nginx_listen_ipv6 = True
# Paths denied on the public Music Assistant vhost (e.g. ["/internal/"]).
music_denied_paths = []

# --- health, upgrades, monitoring -------------------------------------------------------
# Check HTTPS from the machine running pyinfra (httpx) after the local gates.
music_external_check = True
# Address to connect to for that check instead of resolving the public name (tests:
# the container address); None resolves the name normally.
music_external_address = None
# CA file (local) httpx trusts for that check; None uses the system's CAs.
music_external_ca_file = None
# How many old releases to keep per app (besides the live and the previous one).
music_keep_releases = 2
# Health-check timer period (systemd OnCalendar/OnUnitActiveSec syntax).
music_health_check_every = "5min"
# Success criterion of the plan: both services together below this many MiB of memory.
music_memory_budget_mb = 100
