"""Music Assistant + OAuth server (Alexa account linking) on a native VM.

deploys/music.py: preflight -> layout -> Music Assistant -> OAuth server -> nginx + TLS
-> health gates (rollback on a failed upgrade) -> health-check timer. Test overrides come
from the e2e tests as `--data`.
"""

# Secrets the deploy needs (from .env or the environment); checked before connecting.
required_secrets = ["ALEXA_CLIENT_SECRET", "MUSIC_WEB_PASSWORD"]
# The ones that land in the OAuth server's EnvironmentFile (0600), never in a unit.
oauth_secrets = ["ALEXA_CLIENT_SECRET"]

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

# apt packages the plan installs (nginx and certbot come from their own parts; ffmpeg is
# always installed: Music Assistant needs it to start).
music_apt_packages = ["python3-venv", "python3-pip", "curl", "git", "ca-certificates"]
# Oldest ffmpeg major accepted (MA 2.3: 6; Debian 12 has 5.1, Ubuntu 24.04 6.1, Debian 13 7).
# With 5, MA 2.3 starts but logs "FFMpeg version is too old" and playback may fail.
music_ffmpeg_min_major = 6

# --- Music Assistant -----------------------------------------------------------------
# Install root: releases/app/<id>/venv, app -> the live release, venv -> app/venv, data/,
# backups/ (data before each switch).
music_base_dir = "/opt/music-assistant"
# A pinned pip spec (==VERSION or name @ URL with a tag). The venv is rebuilt (new
# release) only when this spec (or the wheel below) changes. (Built from a git tag, MA
# reports server_version 0.0.0: its release job writes the version into pyproject.)
music_assistant_spec = "music-assistant @ git+https://github.com/music-assistant/server.git@2.3.0"
# Extras installed with the spec or the wheel alike. MA's runtime (aiorun, zeroconf,
# ifaddr, aiosqlite ...) is its "server" extra: without it `mass` dies on import.
music_assistant_extras = ["server"]
# Local wheel file (on the machine running pyinfra) to upload and install instead of the
# spec; used by the tests (sample app) and for offline installs.
music_assistant_wheel = None
# Local directory of dependency wheels (e.g. from `pip download`), uploaded with the
# release and given to pip as --find-links (offline installs, tests).
music_assistant_wheelhouse = None
# Extra pip arguments (e.g. ["--no-index"] when installing from wheels offline).
music_assistant_pip_args = []
# Command line; {base} is music_base_dir. The venv path is stable across releases.
music_assistant_exec_start = "{base}/venv/bin/mass --config {base}/data"
# Extra environment for Music Assistant (no secrets here: it ends up in the unit file).
music_assistant_env = {}
# Seconds systemd waits before restarting a crashed Music Assistant.
music_assistant_restart_sec = 10
# Sandbox of the Music Assistant unit (keys of deploys/parts/service.py ServiceSpec). MA
# reads its network interfaces over netlink (ifaddr/zeroconf): AF_NETLINK is required.
music_assistant_sandbox = {"address_families": ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]}
# Port of MA's webserver (UI + full API). MA binds 0.0.0.0 by default; the deploy sets
# `core/webserver/values/bind_ip` = 127.0.0.1 in MA's settings.json (nginx is the entry).
music_assistant_port = 8095
# Port of MA's stream server (players fetch audio from it); loopback unless opened below.
music_stream_port = 8097
# A network (CIDR) whose players may reach the stream port: MA's stream server then binds
# every address and ufw allows that network only. None keeps it on 127.0.0.1.
music_stream_allow_from = None
# Optional HAOS backup (.tar, local path) to import MA's settings.json from, once: an
# existing data/settings.json on the host is never overwritten.
music_import_haos_backup = None

# --- OAuth server ----------------------------------------------------------------------
# Install root: releases/current/<id>/ (code + venv), current -> the live release, venv -> current/venv.
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
# Access control of the public MA vhost (MA 2.3 has no login): basic auth with the
# password from this secret (None: no password) and/or an IP allow-list (CIDRs). At least
# one is required. With both, "all" needs both, "any" lets listed networks in without one.
music_web_user = "music"
music_web_password_secret = "MUSIC_WEB_PASSWORD"
music_web_allow_from = []
music_web_satisfy = "all"
# Host firewall (ufw): deny incoming except these (and the stream port, see above).
music_firewall = True
music_firewall_allow = [22, 80, 443]

# --- health, upgrades, monitoring -------------------------------------------------------
# Check HTTPS from the machine running pyinfra (httpx) after the local gates.
music_external_check = True
# Address to connect to for that check instead of resolving the public name (tests:
# the container address); None resolves the name normally.
music_external_address = None
# CA file (local) httpx trusts for that check; None uses the system's CAs.
music_external_ca_file = None
# How many old releases to keep per app (besides the live and the previous one); `make
# rollback DEPLOY=music [TO=id]` goes back to one of them.
music_keep_releases = 2
# How many data backups (taken before each switch) to keep.
music_keep_backups = 5
# Run each release switch (backup, stop, link, migrate, start, health gate, rollback) on
# the host as the transient unit music-release.service (/opt/infra/bin/release-switch), so
# a killed pyinfra or a dropped SSH session cannot leave Music Assistant stopped; False
# runs the same sequence from the controller.
music_switch_on_host = True
# Health-check timer period (systemd OnCalendar/OnUnitActiveSec syntax).
music_health_check_every = "5min"
# Success criterion of the plan: both services together below this many MiB of memory.
music_memory_budget_mb = 100

# OS releases this deploy is tested on. MA 2.3 needs Python >= 3.11 (Ubuntu 22.04 has
# 3.10) and ffmpeg >= 6 (Debian 12 has 5.1: see music_ffmpeg_min_major).
supported_os = {"ubuntu": ["24.04"], "debian": ["12", "13"]}
