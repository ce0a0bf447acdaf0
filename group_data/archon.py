"""Archon: Supabase (postgres, kong, rest, studio, meta) + Archon (server, mcp, ui, agents)
as ONE compose stack on a Docker host, behind nginx with TLS (the consolidation plan).

deploys/archon.py: preflight -> Docker host -> env file (secrets generated on the host)
-> migration from the old layout (only where one is found) -> compose stack -> health
gates -> nginx + TLS -> health-check timer. Test overrides come from the e2e tests as
`--data` (stand-in images, short healthchecks, a private subnet).
"""

from deploys.settings import Count

# Secrets from .env or the environment (checked before connecting). They land in the
# stack's env file (0600) only. POSTGRES_PASSWORD, JWT_SECRET, ARCHON_BOOTSTRAP_SECRET and
# the two Supabase JWTs are NOT here: they are generated once on the host and kept there.
required_secrets = ["OPENAI_API_KEY"]
# Passed to the stack when set (empty otherwise). The generated names may be set too: a
# value in .env is used instead of generating one (once: the deploy never rotates them).
archon_optional_secrets = ["LOGFIRE_TOKEN", "LOGFLARE_API_KEY", "POSTGRES_PASSWORD", "JWT_SECRET",
                           "ARCHON_BOOTSTRAP_SECRET", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_KEY"]
# A migration carries JWT_SECRET, SUPABASE_ANON_KEY and SUPABASE_SERVICE_KEY over from the old
# layout's .env (archon_old_env_file): Archon's stored provider keys are encrypted with a key
# derived from SUPABASE_SERVICE_KEY. An old key without its JWT_SECRET is checked against
# these (the supabase CLI's default); none matching stops the run: put JWT_SECRET in .env.
archon_known_jwt_secrets = ["super-secret-jwt-token-with-at-least-32-characters-long"]

# --- layout on the host ------------------------------------------------------------------
archon_dir = "/opt/archon"
# Compose project name (`docker compose -p`). Not the old layout's "archon": the old
# containers stay untouched (stopped, renamed when a name clashes) until the migration
# is verified, so a rollback just starts them again. Plain `docker compose ps` in
# archon_dir works once the old layout is gone: the deploy links docker-compose.yml to the
# production file and .env to the env file, which sets COMPOSE_PROJECT_NAME.
archon_compose_project = "archon-production"
# The plan's file names, inside archon_dir.
archon_compose_file = "docker-compose.production.yml"
archon_env_file = ".env.production"
# Root-only directory for the generated secrets (generated.env) and the ones from .env
# (user.env); the stack's env file is assembled from both on the host.
archon_secrets_dir = "/etc/archon"
# Lifetime of the generated SUPABASE_ANON_KEY / SUPABASE_SERVICE_KEY JWTs.
archon_jwt_lifetime_days = 3650

# --- public names (nginx vhosts + TLS) ---------------------------------------------------
archon_public_name = "archon.nexorithm.io"  # UI, /api/ and /socket.io/ (WebSocket)
archon_studio_name = "supabase.archon.nexorithm.io"  # Supabase Studio
# Studio reaches the SQL editor as postgres: closed by default (no vhost, no certificate).
# True: its host is served through Kong, which asks for DASHBOARD_USERNAME (below) and
# DASHBOARD_PASSWORD (generated on the host, /etc/archon/generated.env, or from .env),
# Supabase's own basic-auth setup.
archon_studio_public = False
archon_dashboard_username = "supabase"
# nginx + Let's Encrypt on this host (False: another proxy fronts the stack; then the public
# names need not resolve here and ports 80/443 are left alone).
archon_proxy = True
archon_nginx_site = "archon"
acme_webroot = "/var/www/acme"
acme_staging = False
nginx_listen_ipv6 = True
# client_max_body_size on the UI host (document uploads go through /api/).
archon_max_body = "50m"
# Hosts the UI accepts (VITE_ALLOWED_HOSTS); the public names are always included.
archon_allowed_hosts = ["localhost", "127.0.0.1"]

# --- the stack ---------------------------------------------------------------------------
# Every published port binds here (loopback only: nginx is the only public entry).
archon_bind_address = "127.0.0.1"
# Host ports (the container ports are the plan's and fixed).
archon_ports = {
    "kong": 54321,
    "postgres": 54322,
    "studio": 54323,
    "archon-server": 8181,
    "archon-mcp": 8051,
    "archon-ui": 3737,
    "archon-agents": 8052,
}
# Images. The archon-* ones are what the old layout built from source in /opt/archon
# (`docker compose build`, compose v2 names them <project>-<service>); production runs
# images, never source mounts. Push them to a registry and name them here to upgrade.
archon_images = {
    "postgres": "public.ecr.aws/supabase/postgres:17.6.1.017",
    "kong": "public.ecr.aws/supabase/kong:2.8.1",
    "rest": "public.ecr.aws/supabase/postgrest:v13.0.7",
    "studio": "public.ecr.aws/supabase/studio:2025.10.09-sha-433e578",
    "meta": "public.ecr.aws/supabase/postgres-meta:v0.91.7",
    "archon-server": "archon-archon-server:latest",
    "archon-mcp": "archon-archon-mcp:latest",
    "archon-ui": "archon-archon-frontend:latest",
    "archon-agents": "archon-archon-agents:latest",
}
# The one network (the plan's subnet; pick another if it overlaps a route on the host).
archon_network = "archon_production"
archon_network_subnet = "172.20.0.0/16"
archon_postgres_volume = "archon_postgres_data"
# /etc/postgresql-custom of the Supabase image (its pgsodium root key): on a volume, as in
# Supabase's own compose (db-config), so the key outlives the container. A migration seeds
# it with the old database's key (archon_old_config_volume).
archon_postgres_config_volume = "archon_postgres_config"
# The image's superuser (supabase/postgres sets POSTGRES_USER=supabase_admin; its init
# scripts need it). `postgres` is NOT a superuser on Supabase: dumps and admin SQL run as
# this user, over 127.0.0.1 inside the container (trusted by the image's pg_hba).
archon_postgres_admin_user = "supabase_admin"
archon_postgres_db = "postgres"
# How Archon reaches Kong. archon-server refuses plain http except to localhost,
# host.docker.internal, *.localhost or a private IP (upstream config.py
# validate_supabase_url), so `http://kong:8000` would stop it at start-up. A name ending in
# .localhost becomes a network alias of kong; an IP literal becomes kong's fixed address on
# the stack network (it must lie in archon_network_subnet).
archon_supabase_url = "http://kong.localhost:8000"
# Archon's own schema: migration/<archon_schema_file> of the Archon checkout on the host
# (the old layout built from source in /opt/archon). Run once, after Supabase's init, on a
# database without Archon's tables; mounted read-only at /app/migration in archon-server,
# where upstream's migration tracking (archon_migrations) reads it.
archon_migration_dir = "/opt/archon/migration"
archon_schema_file = "complete_setup.sql"
# A local directory (on the machine running pyinfra) to upload to archon_migration_dir
# (e.g. the `migration/` of an Archon checkout at the deployed version). None: use what the
# host has.
archon_migration_source = None
# postgres command. The plan's `-c shared_preload_libraries=...` listed SQL-only
# extensions (pgjwt, pgcrypto, uuid-ossp) the server cannot preload and would refuse to
# start with; the Supabase image's own config file already preloads the right ones.
archon_postgres_command = [
    "postgres",
    "-c", "config_file=/etc/postgresql/postgresql.conf",
    "-c", "log_statement=mod",
    "-c", "max_connections=200",
    "-c", "shared_buffers=256MB",
]
# Optional agents service (compose profile "agents").
archon_agents_enabled = False
# Mount /var/run/docker.sock (read-only) into archon-server. Off: the plan mounted it for
# development-time service discovery; it gives the container root on the host.
archon_server_docker_socket = False
# Lifetime (s) of the user JWTs PostgREST issues (JWT_EXP in the plan).
archon_jwt_exp = 3600
archon_log_level = "INFO"
# Healthcheck commands per service (["CMD", ...] or ["CMD-SHELL", "..."]).
archon_healthchecks = {
    "postgres": ["CMD", "pg_isready", "-U", "postgres", "-h", "localhost"],
    "kong": ["CMD", "kong", "health"],
    "rest": ["CMD", "postgrest", "--ready"],
    "studio": ["CMD", "node", "-e", "fetch('http://localhost:3000/api/platform/profile').then((r) => {if (r.status !== 200) throw new Error(r.status)})"],
    "meta": ["CMD", "node", "-e", "fetch('http://localhost:8080/health').then((r) => {if (r.status !== 200) throw new Error(r.status)})"],
    "archon-server": ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8181/health')"],
    "archon-mcp": ["CMD", "python", "-c", "import socket; s=socket.socket(); s.connect(('localhost', 8051)); s.close()"],
    "archon-ui": ["CMD", "curl", "-f", "http://localhost:3737"],
    "archon-agents": ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8052/health')"],
}
# Override interval/timeout/retries/start_period of every healthcheck (tests: seconds).
archon_healthcheck_timing = None
# ... and per service, over that (e.g. {"postgres": {"start_period": "120s"}}: Supabase's
# init on a new volume takes a while; failures in start_period do not count).
archon_healthcheck_timing_by_service = {}
# Extra (non-secret) environment per service, e.g. {"archon-server": {"LOG_LEVEL": "DEBUG"}}.
archon_service_env = {}

# --- health --------------------------------------------------------------------------------
# How long the stack may take to turn healthy (deploy gate and migration verification).
archon_health_timeout_s = 300
# Archon API health endpoint, asked on the host.
archon_api_health_url = "http://127.0.0.1:8181/health"
# Health-check timer (the plan's health-check.sh) period.
archon_health_check_every = "5min"
# The health check also fetches both public names over HTTPS (through nginx).
archon_health_check_external = True
# CA file ON THE HOST curl trusts for those (None: the system's CAs).
archon_health_ca_file = None
# Root-only file with `API_KEY=...` (an Archon API key): then the check also calls the
# authenticated endpoint below; without it that check is skipped.
archon_health_api_key_file = "/etc/archon/health.env"
archon_auth_check_path = "/api/auth/validate"
# The plan's API-key authentication (the operator's fork; upstream v1 has none). On: the
# health check also proves that archon_auth_check_path refuses a request without a key
# (401/403); a 2xx there fails the check.
archon_api_auth = False

# --- releases (`make releases DEPLOY=archon`, `make rollback DEPLOY=archon [TO=id]`) --------
# A release is the set of images the stack runs (archon_images, by their ids on the host).
# Before the images change, the database is backed up (archon_backup_dir/archon-release-<stamp>,
# the format `make archon-restore` reads) and named in the history line; a rollback puts a
# kept release's images back with the database as it was when that release was left. How
# many releases are kept (their records; the newest N+1 release backups stay on the host).
archon_keep_releases: Count = 3

# --- migration from the old layout (supabase CLI + separate archon compose) ---------------
# Backups land in <dir>/archon-<YYYYmmdd_HHMMSS>/ (0700): pg_dumpall, config tarball,
# data-volume tarball, row counts, log.
archon_backup_dir = "/root/backups"
archon_old_db_container = "supabase_db_supabase"
archon_old_db_volume = "supabase_db_supabase"
# The old database's /etc/postgresql-custom (supabase CLI: supabase_config_<project>): its
# pgsodium root key is copied to the new stack's config volume (None: a new key).
archon_old_config_volume = "supabase_config_supabase"
# Containers and volumes of the old layout, by name prefix (supabase CLI naming).
archon_old_container_prefix = "supabase_"
archon_old_volume_prefix = "supabase_"
# The old networks (app-network is created by the old compose project as <project>_app-network).
archon_old_networks = [
    "supabase_network_supabase",
    "supabase_network_archon",
    "supabase_network_root",
    "archon_app-network",
]
# The old Archon compose project (in archon_dir) and the files the config backup takes.
archon_old_compose_project = "archon"
archon_old_compose_file = "docker-compose.yml"
archon_old_env_file = ".env"
archon_old_config = ["docker-compose.yml", ".env", "supabase"]
archon_old_rebind_unit = "supabase-rebind.service"
# Schemas moved from the old database into the new (Supabase-initialised) one, with the
# extensions they use; their row counts must match afterwards. Supabase's own schemas
# (auth, storage, ...) come from the new image's init; the old ones stay in the backups.
archon_verify_schemas = ["public"]
