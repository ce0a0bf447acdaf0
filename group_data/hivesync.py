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

The backend's settings follow the real app (quirky14-dev/HiveSync at c5680a2,
backend/app/config.py), not only the plan: it reads R2_ACCESS_KEY / R2_SECRET_KEY /
R2_ENDPOINT / R2_PUBLIC_BASE_URL (the plan says R2_ACCESS_KEY_ID / R2_SECRET_ACCESS_KEY /
R2_PUBLIC_URL), and eight secrets of its own whose defaults are placeholders.

Secrets (from .env or the environment, checked before connecting). The server-only ones
are NOT here: no person needs them, so the deploy generates them once ON the host
(/etc/hivesync/generated.env, 0600) and keeps them. WORKER_CALLBACK_SECRET is shared by
the backend and the workers, so it must come from the operator's .env.
"""

from deploys.env_schema import OPTIONAL_HTTPS_URL, R2_BUCKET_NAME, BackendEnv

required_secrets = [
    "R2_ACCOUNT_ID",
    "R2_ACCESS_KEY",
    "R2_SECRET_KEY",
    "WORKER_CALLBACK_SECRET",
]
# Passed to the backend when set in .env, left empty otherwise (the plan lists the first
# two; the app at c5680a2 reads none of them yet except LZ_API_KEY/SENTRY_DSN/AUTH_*).
hivesync_optional_secrets = ["RESEND_API_KEY", "OPENAI_API_KEY", "LZ_API_KEY", "AUTH_APPLE_PRIVATE_KEY", "SENTRY_DSN"]
# Generated once on the server and kept (name -> random bytes, hex-encoded): config.py's
# own secrets. Move a name to required_secrets (and out of here) to supply it yourself,
# e.g. LZ_WEBHOOK_SECRET once LemonSqueezy billing is on (it must match the store's).
hivesync_generated_secrets = {
    "POSTGRES_PASSWORD": 24,
    "JWT_SECRET": 32,
    "API_TOKEN_PEPPER": 32,
    "SESSION_SECRET": 32,
    "DEVICE_TOKEN_SECRET": 32,
    "PREVIEW_TOKEN_SECRET": 32,
    "PREVIEW_DEVICE_CONTEXT_SECRET": 32,
    "LZ_WEBHOOK_SECRET": 32,
}

# "server" (Linode VM), "workstation" (wrangler for the Workers) or "local_docker" (the
# plan's N.2.2: the same compose stack on the operator's machine, as the operator, no
# ufw/nginx/certbot; `make hivesync-local-up`). Set per host in the inventory
# (deploys/environments.py); this default only serves unnamed hosts.
hivesync_role = "server"

# --- preflight ---------------------------------------------------------------------------
# The supported OS (Ubuntu 22.04) and the firewall's allow list (22, 80, 443) are the
# `linode` kind's: group_data/linode.py.
# The plan starts at a 2 GB Linode, which reports about 1.9 GiB (MemTotal): below this
# total, or below `hivesync_stack_memory_mb` available, `hivesync_memory_policy` decides.
hivesync_min_memory_mb = 1800
# What backend + postgres + redis need free before they start.
hivesync_stack_memory_mb = 768
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
# THE backend port: published on the bind address, the container's port, `--port` in
# the command below and PORT in its env.
hivesync_backend_port = 4000
# The backend's command; {port} is hivesync_backend_port. This is upstream's Dockerfile
# CMD (which hard-codes 4000). None: the image's own CMD (then the port must be 4000).
hivesync_backend_command = ["uvicorn", "backend.app.main:app", "--host", "0.0.0.0", "--port", "{port}"]
# Host ports for postgres and redis (None: not published at all, only on the compose network).
hivesync_postgres_port = 5432
hivesync_redis_port = 6379
# The backend image is built ON the host from the operator's HiveSync checkout (it is in no
# registry): this path (relative paths: to this repository), as it is on disk (git-tracked
# + untracked-not-ignored files), or at `hivesync_backend_ref` (a commit, tag or branch of
# that repository: `git archive`). Tagged <repository>:src-<hash of the files, the
# Dockerfile path and the build args>; rebuilt only when that hash changes.
hivesync_backend_source: str | None = "../hivesync"
# None: the checkout as it is on disk; else a commit, tag or branch of it (git archive).
hivesync_backend_ref: str | None = None
# The built images' repository name on the host (tags src-<hash>).
hivesync_backend_repository = "hivesync-backend"
# Relative to the source root (upstream c5680a2: the root Dockerfile).
hivesync_backend_dockerfile = "Dockerfile"
# `docker build --build-arg NAME=value` (not secrets: they stay in the image's history).
hivesync_backend_build_args = {}
# Built images kept on the host, newest first (the previous one is the rollback), >= 2.
hivesync_backend_keep_images = 3
# The build runs as the transient unit hivesync-build.service; it is killed after this.
hivesync_build_timeout_s = 3600
# A ready image instead (a registry's, or one loaded by hand): no source, no build.
hivesync_backend_image: str | None = None
# Upstream's own compose (c5680a2 docker-compose.yml) runs postgres:15; the plan names no
# version. A data volume only starts under the major version that made it: a stack that
# already runs 16 keeps "postgres:16" here (pg_dump/restore to move between majors).
hivesync_postgres_image = "postgres:15"
hivesync_redis_image = "redis:7"
# Named volumes (the plan's N.4.3: local persistence for postgres and redis).
hivesync_postgres_volume = "hivesync_postgres_data"
hivesync_redis_volume = "hivesync_redis_data"
# redis persistence: append-only file in its volume.
hivesync_redis_command = ["redis-server", "--appendonly", "yes"]
# Healthchecks (compose `test`) and their timing. backend None: python3 asks
# http://127.0.0.1:<port><hivesync_backend_health_path> inside the container.
hivesync_healthchecks = {
    "backend": None,
    "postgres": ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U hivesync -d hivesync"],
    "redis": ["CMD", "redis-cli", "ping"],
}
hivesync_healthcheck_timing = {"interval": "10s", "timeout": "5s", "retries": 5, "start_period": "20s"}
# How the backend makes its schema: "auto" (Alembic when its working directory has
# hivesync_alembic_ini, else create_all at start-up: upstream c5680a2 has no Alembic),
# "alembic" or "tables". With Alembic the gate wants the DB at head (these commands run
# in the backend container); without, it looks for the plan's N.7.2 tables.
hivesync_migrations = "auto"
hivesync_alembic_ini = "alembic.ini"
hivesync_alembic_current = ["alembic", "current"]
hivesync_alembic_heads = ["alembic", "heads"]
hivesync_required_tables = ["preview_jobs", "ai_doc_jobs", "worker_nodes", "worker_heartbeats", "audit_logs",
                            "notifications", "tasks", "attachments", "teams", "projects", "users"]
# A required table missing: "warn" (the app at c5680a2 has 6 of the 11) or "fail".
hivesync_missing_tables = "warn"
# The backend's own health path (compose healthcheck, gate, rollback): upstream's /health.
hivesync_backend_health_path = "/health"
hivesync_health_timeout_s = 180
# pg_dump (custom format, verified with pg_restore --list) before the backend image changes.
hivesync_backup_dir = "/var/backups/hivesync"
hivesync_keep_backups = 10

# --- backend environment (non-secret: config.py's settings + the plan's N.3 list) ----------
# The AI models AI_MODEL may name (the backend's and the workers' AI_MODEL are one value).
hivesync_ai_models = ["gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "o3", "o4-mini"]
# Typed by deploys/env_schema.py (port int, booleans, choices, AI_MODEL from the list above,
# URLs https in production), checked before connecting. Set in one place elsewhere, never
# here: PORT (hivesync_backend_port), BASE_URL (https://<hivesync_domain>), R2_BUCKET
# (hivesync_r2_bucket), R2_ENDPOINT (hivesync_r2_endpoint). POSTGRES_HOST and REDIS_HOST
# are the compose services.
hivesync_backend_env: BackendEnv(hivesync_ai_models) = {
    "POSTGRES_HOST": "postgres",
    "POSTGRES_PORT": 5432,
    "POSTGRES_DB": "hivesync",
    "POSTGRES_USER": "hivesync",
    "REDIS_HOST": "redis",
    "REDIS_PORT": 6379,
    "EMAIL_PROVIDER": "resend",
    "AI_PRIMARY": "openai",
    "AI_MODEL": "gpt-4.1",
    "LOCAL_AI_ENABLED": False,
    "LOCAL_AI_MODEL_PATH": "/models/llama",
    "PREVIEW_MAX_TIMEOUT_MS": 8000,
    "LOG_LEVEL": "info",
    # public R2 URL for public assets (config.py's name); empty when none are used
    "R2_PUBLIC_BASE_URL": "",
}
# R2_ENDPOINT (config.py); None: https://<R2_ACCOUNT_ID>.r2.cloudflarestorage.com
hivesync_r2_endpoint: OPTIONAL_HTTPS_URL = None

# --- nginx + TLS -------------------------------------------------------------------------
hivesync_nginx_site = "hivesync"
acme_webroot = "/var/www/acme"
acme_staging = False
nginx_listen_ipv6 = True
hivesync_max_body = "25m"
# Paths nginx refuses (403); the plan's N.8 "deny /internal/*" (and /internal itself).
# FastAPI serves its docs under the stripped /api/ prefix too: keep them private.
hivesync_denied_paths = ["= /internal", "/internal/", "= /api/docs", "= /api/redoc", "= /api/openapi.json", "/api/docs/"]
# nginx publishes this prefix (and the WebSocket paths), nothing else. The backend
# serves at its root (/health, /auth/..., /projects), so the prefix is stripped:
# https://<domain>/api/auth/register -> backend /auth/register.
hivesync_api_prefix = "/api/"
hivesync_strip_api_prefix = True
# The public health URL path (through nginx): the external check and the workstation.
hivesync_public_health_path = "/api/health"
# WebSocket path(s) of the backend (proxied with the Upgrade headers; /api/ has them too).
# Upstream c5680a2 has no WebSocket route yet.
hivesync_websocket_paths = ["/ws/"]
# After TLS: GET https://<domain><public health path> from the machine running pyinfra.
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
# npm on this machine: `npm ci` runs in a worker that has a package-lock.json, when it changes.
hivesync_npm = "npm"
# The plan's N.6.1; healthcheck_worker is optional ("enabled": False to skip it). Per worker,
# in the production env: "routes" (Cloudflare route patterns, e.g. "api.example.com/preview/*",
# or {"pattern": ..., "zone_name": ...}) and "crons" (cron triggers, "*/5 * * * *"). Without
# either nothing reaches the worker (workers_dev is off); the deploy warns.
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
# R2 (the plan's N.6.3): THE bucket (R2_BUCKET of the backend and the workers, the
# workers' binding), and these prefixes (passed to the workers as a variable).
hivesync_r2_bucket: R2_BUCKET_NAME = "hivesync-r2"
hivesync_r2_binding = "R2"
hivesync_r2_prefixes = ["previews/", "ai-docs/", "logs/workers/", "tasks/attachments/"]
# Callback path on the backend (WORKER_CALLBACK_URL = https://<domain><path>).
hivesync_callback_path = "/api/v1/workers/callback"
# Secrets pushed to every worker's secret store (values from .env).
hivesync_worker_secrets = ["WORKER_CALLBACK_SECRET"]

# Workstation role: the base URL the dev worker config points at (default: the local backend),
# and a CA bundle to trust for the production HTTPS check (tests: the ACME test CA).
hivesync_dev_base_url = None
hivesync_workers_ca_file = None

# --- local Docker on the operator's machine (role "local_docker", the plan's N.2.2) --------
# The compose file, .env.production (0600), the generated secrets (secrets/, 0700) and the
# build, as the operator ("~" is their home). The stack is the server's: same services,
# images, volumes and loopback ports; workers stay on Cloudflare.
hivesync_local_dir = "~/.local/share/hivesync"
# What a run does: "deploy" (build, env, stack, health), "start", "stop" (containers and
# volumes stay), "status" (make hivesync-local-up|start|stop|status).
hivesync_local_action = "deploy"
# BASE_URL of the local backend; None: http://<hivesync_bind_address>:<hivesync_backend_port>.
hivesync_local_base_url: str | None = None

# --- local development on the operator's machine (role "local_dev", the plan's N.2.1) ------
# The backend from this checkout (on the machine it runs on; None: hivesync_backend_source)
# in a venv (<hivesync_local_dir>/dev/venv, rebuilt when requirements.txt changes),
# postgres + redis of the server's stack in Docker (their loopback ports), each enabled
# worker under `wrangler dev --env dev` (.dev.vars 0600: hivesync_worker_secrets), PID files.
hivesync_dev_checkout: str | None = None
hivesync_dev_python = "python3"
# `python -m venv` options (e.g. ["--system-site-packages"]) and extra `pip install` options.
hivesync_dev_venv_args = []
hivesync_dev_pip_args = []
# {venv}, {checkout}, {bind}, {port}: upstream's CMD with --reload, from the venv.
hivesync_dev_backend_cmd = ["{venv}/bin/uvicorn", "backend.app.main:app", "--host", "{bind}", "--port", "{port}",
                            "--reload"]
# `wrangler dev --port`: the first enabled worker's; the next ones count up.
hivesync_dev_worker_port = 8787
hivesync_dev_start_timeout_s = 60
hivesync_dev_compose_file = "docker-compose.dev.yml"
