"""HiveSync (plan 004, "Phase N"): the backend on a Linode VM and the Cloudflare Workers.

deploys/hivesync.py runs one of two roles per host (`hivesync_role`, set in the inventory):

- "server" (the Linode VM, Ubuntu 22.04): preflight -> ufw 22/80/443 -> Docker ->
  .env.production (0600) -> compose stack backend + postgres + redis (ports on 127.0.0.1,
  Alembic on start, DB at head verified, pg_dump before an image change, rollback when
  the health gate fails) -> nginx (HTTP->HTTPS, /api/, WebSocket, /internal/ denied) +
  certbot -> HTTPS checked from outside.
- "workstation" (the operator's machine, @local): the workers' wrangler.toml, their
  secrets (`wrangler secret put`, stdin), `wrangler deploy --env production` when a
  worker changed. Refused until the backend answers over HTTPS (the plan: "SSL must
  succeed before Worker callbacks allowed").

Secrets (from .env or the environment, checked before connecting). POSTGRES_PASSWORD and
JWT_SECRET are NOT here: they never leave the server, so the deploy generates them once ON
the host (/etc/hivesync/generated.env, 0600) and keeps them. WORKER_CALLBACK_SECRET is
shared by the backend and the workers, so it must come from the operator's .env.
"""

required_secrets = [
    "RESEND_API_KEY",
    "OPENAI_API_KEY",
    "R2_ACCOUNT_ID",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "WORKER_CALLBACK_SECRET",
]
# Generated once on the server and kept (name -> random bytes, hex-encoded). Move a name
# to required_secrets (and out of here) to supply it yourself instead.
hivesync_generated_secrets = {"POSTGRES_PASSWORD": 24, "JWT_SECRET": 32}

# "server" (Linode VM) or "workstation" (wrangler for the Workers). Set per host in the
# inventory (deploys/environments.py); this default only serves unnamed hosts.
hivesync_role = "server"

# --- preflight ---------------------------------------------------------------------------
# The supported OS (Ubuntu 22.04) and the firewall's allow list (22, 80, 443) are the
# `linode` kind's: group_data/linode.py.
# The plan starts at 2 GB RAM: below this, `hivesync_memory_policy` decides.
hivesync_min_memory_mb = 2048
# "warn" (log and go on) or "fail" (preflight refuses the host).
hivesync_memory_policy = "warn"
preflight_min_disk_mb = 4096

# --- public name -------------------------------------------------------------------------
# The A record of this name must point at the Linode (checked before anything changes).
hivesync_domain = "hivesync.example.com"

# --- the compose stack -------------------------------------------------------------------
hivesync_dir = "/opt/hivesync"
hivesync_compose_project = "hivesync"
hivesync_compose_file = "docker-compose.yml"
hivesync_env_file = ".env.production"
# Root-only: generated.env (made once here) and user.env (from the operator's .env).
hivesync_secrets_dir = "/etc/hivesync"
# Every published port binds here: nginx is the only public entry.
hivesync_bind_address = "127.0.0.1"
hivesync_backend_port = 4000
# Host ports for postgres and redis (None: not published at all, only on the compose network).
hivesync_postgres_port = 5432
hivesync_redis_port = 6379
# The backend image: a registry image, or one built on the host from the user's source
# (`hivesync_backend_build`: a directory on the host with the Dockerfile; then the image
# is tagged with this name).
hivesync_backend_image = "hivesync-backend:latest"
hivesync_backend_build = None
hivesync_postgres_image = "postgres:16"
hivesync_redis_image = "redis:7"
# Named volumes (the plan's N.4.3: local persistence for postgres and redis).
hivesync_postgres_volume = "hivesync_postgres_data"
hivesync_redis_volume = "hivesync_redis_data"
# redis persistence: append-only file in its volume.
hivesync_redis_command = ["redis-server", "--appendonly", "yes"]
# Healthchecks (compose `test`) and their timing.
hivesync_healthchecks = {
    "backend": ["CMD-SHELL", "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/api/health')\""],
    "postgres": ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U hivesync -d hivesync"],
    "redis": ["CMD", "redis-cli", "ping"],
}
hivesync_healthcheck_timing = {"interval": "10s", "timeout": "5s", "retries": 5, "start_period": "20s"}
# The backend runs `alembic upgrade head` on start (the plan's N.7.3); the deploy checks
# the result with these commands inside the backend container (working dir: the app's).
hivesync_alembic_current = ["alembic", "current"]
hivesync_alembic_heads = ["alembic", "heads"]
hivesync_health_path = "/api/health"
hivesync_health_timeout_s = 180
# pg_dump (custom format, verified with pg_restore --list) before the backend image changes.
hivesync_backup_dir = "/var/backups/hivesync"
hivesync_keep_backups = 10

# --- backend environment (non-secret; the plan's N.3 list) --------------------------------
# BASE_URL is https://<hivesync_domain>; POSTGRES_HOST/REDIS_HOST are the compose services.
hivesync_backend_env = {
    "PORT": 4000,
    "POSTGRES_HOST": "postgres",
    "POSTGRES_PORT": 5432,
    "POSTGRES_DB": "hivesync",
    "POSTGRES_USER": "hivesync",
    "REDIS_HOST": "redis",
    "REDIS_PORT": 6379,
    "EMAIL_PROVIDER": "resend",
    "AI_PRIMARY": "openai",
    "AI_MODEL": "gpt-4.1",
    "LOCAL_AI_ENABLED": "false",
    "LOCAL_AI_MODEL_PATH": "/models/llama",
    "PREVIEW_MAX_TIMEOUT_MS": 8000,
    "LOG_LEVEL": "info",
    "R2_BUCKET": "hivesync-r2",
    # public R2 URL for public assets; empty when none are used
    "R2_PUBLIC_URL": "",
}

# --- nginx + TLS -------------------------------------------------------------------------
hivesync_nginx_site = "hivesync"
acme_webroot = "/var/www/acme"
acme_staging = False
nginx_listen_ipv6 = True
hivesync_max_body = "25m"
# Paths nginx refuses (403); the plan's N.8 "deny /internal/*".
hivesync_denied_paths = ["/internal/"]
# WebSocket path(s) of the backend (proxied with the Upgrade headers; /api/ has them too).
hivesync_websocket_paths = ["/ws/"]
# After TLS: GET https://<domain><health path> from the machine running pyinfra.
hivesync_external_check = True
# Address to connect to instead of resolving the domain (tests), and a CA file to trust.
hivesync_external_address = None
hivesync_external_ca_file = None

# --- Cloudflare Workers (role "workstation") -----------------------------------------------
# wrangler on the operator's machine (`npm i -g wrangler`, then `wrangler login`).
hivesync_wrangler = "wrangler"
# The HiveSync repository's workers directory on this machine: one sub-directory per
# worker with its source (entry `main` inside). Relative paths are relative to this repository.
hivesync_workers_src = "../hivesync/workers"
# Where the rendered wrangler.toml, the staged source and the deploy digests live.
hivesync_workers_state_dir = "~/.local/state/hivesync/workers"
# The plan's N.6.1; healthcheck_worker is optional ("enabled": False to skip it).
hivesync_workers = {
    "preview_builder": {"main": "index.js", "enabled": True},
    "ai_docs_processor": {"main": "index.js", "enabled": True},
    "worker_callback_relayer": {"main": "index.js", "enabled": True},
    "healthcheck_worker": {"main": "index.js", "enabled": False},
}
hivesync_wrangler_compatibility_date = "2024-09-23"
# wrangler environments ([env.dev] / [env.production]); deploys go to production.
hivesync_wrangler_envs = ["dev", "production"]
hivesync_wrangler_deploy_env = "production"
# R2 (the plan's N.6.3): one bucket, these prefixes (passed to the workers as a variable).
hivesync_r2_bucket = "hivesync-r2"
hivesync_r2_binding = "R2"
hivesync_r2_prefixes = ["previews/", "ai-docs/", "logs/workers/", "tasks/attachments/"]
# Callback path on the backend (WORKER_CALLBACK_URL = https://<domain><path>).
hivesync_callback_path = "/api/v1/workers/callback"
# Secrets pushed to every worker's secret store (values from .env).
hivesync_worker_secrets = ["WORKER_CALLBACK_SECRET"]
