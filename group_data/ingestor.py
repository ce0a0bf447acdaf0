"""ha-ingestor (Epic 22/23): the user's own checkout of wtthornton/ha-ingestor (bbc4ab4),
run with ITS docker-compose.yml plus our override file (deploys/ingestor.py).

Upstream decides services, container names, env names, volumes and the network; this file
holds only what the plan changes (127.0.0.1 binds, env files from upstream's templates,
restart policy, limits), which services the deploy manages and gates, and in what order.
Test overrides come from tests/e2e/test_ingestor.py as `--data`.
"""

# Secrets from .env or the environment (checked before connecting); they land only in
# root-only (0600) env files and are never printed. Optional ones default to "".
required_secrets = ["HOME_ASSISTANT_TOKEN", "INFLUXDB_TOKEN", "INFLUXDB_PASSWORD"]
ingestor_optional_secrets = ["WEATHER_API_KEY"]

# --- where things are --------------------------------------------------------------------
# The project on the host: bin/, compose/ (theirs + override), env/, src/ (the checkout).
ingestor_dir = "/opt/ha-ingestor"
# The user's checkout on the machine running pyinfra (relative: to this repository). It is
# synced to <ingestor_dir>/src, compose's project directory (`compose build` runs there).
ingestor_source = "../ha-ingestor"
# Not synced (files.sync semantics: file patterns match the full path, directory patterns
# the path relative to the checkout); never deleted on the host either (the env files
# the deploy writes into src/infrastructure/ match `*/.env.*`; `*.previous`: the files a
# stack started by hand in src/ ran with, kept until the first release record).
ingestor_source_exclude = ["*.pyc", "*.db", "*.db-wal", "*.db-shm", "*/.env", "*/.env.*", "*.previous"]
ingestor_source_exclude_dirs = [".git", "__pycache__", "*/__pycache__", "node_modules", "*/node_modules",
                                ".venv", "backups", "data", "logs"]
# Upstream's compose file in the checkout, and its project name (`name:` in it).
ingestor_compose_file = "docker-compose.yml"
ingestor_compose_project = "ha-ingestor"
# Verified backups before every switch: <dir>/ingestor-<YYYYmmdd-HHMMSS>/; keep this many.
ingestor_backup_dir = "/var/backups/ha-ingestor"
ingestor_backups_keep = 10
# Releases kept for `make rollback DEPLOY=ingestor [TO=id]` (<ingestor_dir>/releases/stack/<id>:
# compose and env files, `:rel-<id>` image tags), besides the live one: the last N in the history.
ingestor_keep_releases = 3
# A rollback also puts back the SQLite data (data-api's metadata.db) backed up while that
# release was live: its schema and rows belong to that release. InfluxDB's time series are
# never rolled back (`make ingestor-restore` does that). False: the data stays as it is.
ingestor_rollback_restores_data = True

# --- Home Assistant ------------------------------------------------------------------------
home_assistant_url = "http://homeassistant.local:8123"
# Preflight GETs <url>/api/ with the token from the host: anything but 200 stops the run.
ingestor_check_home_assistant = True

# --- the override file ---------------------------------------------------------------------
# Every port upstream publishes (on all interfaces) is re-published here only.
ingestor_bind_address = "127.0.0.1"
# Restart policy of the managed services (upstream: unless-stopped too); None: upstream's.
ingestor_restart_policy = "unless-stopped"
# service -> memory limit (deploy.resources.limits.memory); unset: upstream's limits.
ingestor_memory_limits = {}
# Healthcheck timing for every managed service; None: upstream's (30 s interval).
ingestor_healthcheck_timing = None
# Build arguments for every built service.
ingestor_build_args = {}

# --- env files -----------------------------------------------------------------------------
# Upstream's compose reads these, but its checkout has only the templates: each is written
# (0600) from its template, with these values set ({name}: a secret or a value below).
# A template value left as a placeholder (your_..._here) stops the run.
ingestor_env_files = {
    "infrastructure/.env.websocket": {
        "template": "infrastructure/env.websocket.template",
        "values": {"HA_URL": "{home_assistant_ws_url}", "HA_TOKEN": "{HOME_ASSISTANT_TOKEN}"},
    },
    "infrastructure/.env.weather": {
        "template": "infrastructure/env.weather.template",
        "values": {"WEATHER_API_KEY": "{WEATHER_API_KEY}"},
    },
    "infrastructure/.env.influxdb": {
        "template": "infrastructure/env.influxdb.template",
        "values": {"INFLUXDB_URL": "http://influxdb:8086", "INFLUXDB_TOKEN": "{INFLUXDB_TOKEN}",
                   "INFLUXDB_ORG": "{influxdb_org}", "INFLUXDB_BUCKET": "{influxdb_bucket}"},
    },
}
# compose's own interpolation (`${HOME_ASSISTANT_TOKEN:-}` in upstream's file): passed with
# --env-file from <dir>/env/compose.env (0600). Without it the `environment:` entries
# would override the env files with empty values.
ingestor_compose_env = {
    "HOME_ASSISTANT_URL": "{home_assistant_url}",
    "HOME_ASSISTANT_TOKEN": "{HOME_ASSISTANT_TOKEN}",
    "INFLUXDB_USERNAME": "{influxdb_user}",
    "INFLUXDB_PASSWORD": "{INFLUXDB_PASSWORD}",
    "INFLUXDB_TOKEN": "{INFLUXDB_TOKEN}",
    "INFLUXDB_ORG": "{influxdb_org}",
    "INFLUXDB_BUCKET": "{influxdb_bucket}",
    "WEATHER_API_KEY": "{WEATHER_API_KEY}",
}
ingestor_influxdb_org = "ha-ingestor"
ingestor_influxdb_bucket = "home_assistant_events"
ingestor_influxdb_user = "admin"

# --- the managed services ------------------------------------------------------------------
# Start order (upstream's depends_on): each group is started (`up -d --no-deps`) and
# health-gated before the next. Upstream's other services are left as they are, reported.
ingestor_start_order = [
    ["influxdb"],
    ["enrichment-pipeline", "data-api", "data-retention", "sports-data"],
    ["websocket-ingestion"],
    ["admin-api"],
    ["health-dashboard"],
]
# Per managed service (names as in upstream's compose):
#   port         the host port upstream publishes (health URL: http://<bind>:<port><health_path>)
#   health_path  GET it; health_expect: JSON dot-path -> value (or list of accepted values)
#   source       checkout paths whose change rebuilds it (with its build args); [] = pulled image
#   dockerfile   its Dockerfile (default <first source path>/Dockerfile): part of the rebuild
#                key, with the base images its FROM lines resolve to on the host
_BUILT = "ha-ingestor-{}:latest"
ingestor_services = {
    "influxdb": {"port": 8086, "health_path": "/health", "health_expect": {"status": "pass"}, "source": []},
    # upstream answers 200 with healthy, or degraded when Home Assistant is quiet for 60 s;
    # the subscription proves the token was accepted
    "websocket-ingestion": {"port": 8001, "health_path": "/health",
                            "health_expect": {"status": ["healthy", "degraded"], "subscription.is_subscribed": True},
                            "source": ["services/websocket-ingestion", "shared"]},
    "enrichment-pipeline": {"port": 8002, "health_path": "/health", "health_expect": {"status": "healthy"},
                            "source": ["services/enrichment-pipeline", "shared"]},
    "admin-api": {"port": 8003, "health_path": "/health", "health_expect": {"status": "healthy"},
                  "source": ["services/admin-api", "shared"]},
    "data-api": {"port": 8006, "health_path": "/health",
                 "health_expect": {"status": "healthy", "dependencies.influxdb.status": "connected",
                                   "dependencies.sqlite.status": "healthy"},
                 "source": ["services/data-api", "shared"]},
    "data-retention": {"port": 8080, "health_path": "/health", "health_expect": {"status": "healthy"},
                       "source": ["services/data-retention", "shared"]},
    # degraded: the sports API is unreachable (upstream still serves)
    "sports-data": {"port": 8005, "health_path": "/health", "health_expect": {"status": ["healthy", "degraded"]},
                    "source": ["services/sports-data"]},
    # nginx: the page, and its proxies to the other containers by upstream's names
    "health-dashboard": {"port": 3000, "health_path": "/", "health_expect": {},
                         "source": ["services/health-dashboard"]},
}
for _name, _spec in ingestor_services.items():
    _spec["image"] = _BUILT.format(_name) if _spec["source"] else None

# --- SQLite + Alembic (Epic 22) ------------------------------------------------------------
# data-api's database: upstream's volume and the file in it.
ingestor_sqlite = {"data-api": {"volume": "sqlite-data", "file": "metadata.db"}}
# The data-api image has alembic but not alembic.ini / alembic/: migrations run from the
# synced checkout's copy, mounted into a one-off container of the NEW image (its src/ is
# what env.py imports) with the volume, before the new data-api starts.
ingestor_migrate_service = "data-api"
ingestor_alembic_dir = "services/data-api"      # holds alembic.ini and alembic/
ingestor_alembic_workdir = "/app"               # alembic.ini's URL is ./data/metadata.db
ingestor_expected_tables = ["alembic_version", "devices", "entities"]
ingestor_journal_mode = "wal"

# --- discovery -----------------------------------------------------------------------------
# Upstream discovers devices over Home Assistant's WebSocket by itself and (at bbc4ab4)
# stores them in InfluxDB: SQLite's devices table may stay empty. True: also wait until
# data-api's SQLite holds devices and entities.
ingestor_discovery_gate = False
ingestor_discovery_timeout_s = 120

# --- InfluxDB (commands run IN its container; {path}: a directory there) -------------------
ingestor_influx_bucket_list = ["influx", "bucket", "list", "--name", "{bucket}", "--hide-headers"]
ingestor_influx_backup = ["influx", "backup", "{path}"]
ingestor_influx_manifest_glob = "*.manifest"

# --- status (make ingestor-status) --------------------------------------------------------
ingestor_status_queries = {"/api/devices": 10, "/api/entities": 10, "/api/v1/events?limit=100": 50}

# --- preflight + gates ---------------------------------------------------------------------
ingestor_docker_min_version = "20.10"
preflight_min_disk_mb = 2048
# How long each start-order group may take to turn healthy.
ingestor_health_timeout_s = 300
# The same for a rollback's groups (the previous release coming back): patient, since
# giving up leaves the stack down.
ingestor_rollback_health_timeout_s = 300
# The whole release (builds included) as a transient systemd unit is stopped after this.
ingestor_release_timeout_s = 7200

# (pyinfra would load the helpers above as host data)
del _name, _spec, _BUILT
