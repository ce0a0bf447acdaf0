"""ha-ingestor (Epic 22/23): InfluxDB + seven services built from the user's source, one
compose stack on a Docker host (deploys/ingestor.py).

Everything the plan names is data here: services, ports, health paths and what their JSON
must say, start order, InfluxDB org/bucket, SQLite files and tables, volumes, memory
limits. Where the real app differs from the plan, change it here, not in the deploy.
Test overrides come from tests/e2e/test_ingestor.py as `--data`.
"""

# Secrets from .env or the environment (checked before connecting); they land only in the
# root-only (0600) env files under <ingestor_dir>/env/ and are never printed.
required_secrets = ["HOME_ASSISTANT_TOKEN", "INFLUXDB_TOKEN", "INFLUXDB_PASSWORD"]

# --- where things are --------------------------------------------------------------------
# The project on the host: compose file, env files, the synced source, scripts.
ingestor_dir = "/opt/ha-ingestor"
# The user's source checkout on the machine running pyinfra (relative: to this repository).
# It is synced to <ingestor_dir>/src and `compose build` runs there (no registry needed).
ingestor_source = "../ha-ingestor"
# Not synced (files.sync semantics: file patterns match the full local path, directory
# patterns the path relative to the checkout): VCS, caches, local data, local secrets.
ingestor_source_exclude = ["*.pyc", "*.db", "*.db-wal", "*.db-shm", "*/.env", "*/.env.*"]
ingestor_source_exclude_dirs = [".git", "__pycache__", "*/__pycache__", "node_modules", "*/node_modules",
                                ".venv", "backups", "data"]
# Compose project name: volumes are <project>_<volume>, images <project>-<service>.
ingestor_compose_project = "ha-ingestor"
ingestor_compose_file = "docker-compose.yml"
# Verified backups before every release: <dir>/ingestor-<YYYYmmdd-HHMMSS>/; keep this many.
ingestor_backup_dir = "/var/backups/ha-ingestor"
ingestor_backups_keep = 10

# --- Home Assistant ------------------------------------------------------------------------
# As the containers (and the host, for the preflight check) reach it.
home_assistant_url = "http://homeassistant.local:8123"
# Preflight GETs <url>/api/ with the token from the host: anything but 200 stops the run.
ingestor_check_home_assistant = True

# --- the stack -----------------------------------------------------------------------------
# EVERY published port binds here: nothing of the stack is reachable from the network.
ingestor_bind_address = "127.0.0.1"
# Start order: each group is started (`up -d --no-deps`) and health-gated before the next.
ingestor_start_order = [
    ["influxdb"],
    ["websocket-ingestion", "enrichment-pipeline", "data-api", "admin-api", "data-retention"],
    ["sports-data"],
    ["health-dashboard"],
]
# Per service:
#   image         the image name (built services get it as their tag: <project>-<service>)
#   build         build context and Dockerfile inside the source checkout (None: pulled image)
#   source        paths in the checkout whose change rebuilds this service (only this one)
#   port          host port (published on ingestor_bind_address) -> container_port; None: not published
#   health_path   GET on the host port; health_expect: JSON dot-path -> value it must have
#   healthcheck   the container healthcheck (docker's view, `compose ps` "(healthy)")
#   memory        memory limit (the plan: InfluxDB <512M, Python services <128M, dashboard <50M)
#   env_file      which env file under <ingestor_dir>/env/ the service reads
#   volumes       named volume -> mount point
_PY_HEALTH = "import sys,urllib.request; urllib.request.urlopen('http://127.0.0.1:%d%s', timeout=4)"


def _service(name, port, container_port=None, health_path="/health", env_file="services", memory="128m",
             expect=None, volumes=None, source=None):
    cport = container_port or port
    return {
        "image": f"ha-ingestor-{name}:latest",
        "build": {"context": ".", "dockerfile": f"services/{name}/Dockerfile"},
        "source": source or [f"services/{name}", "shared"],
        "port": port,
        "container_port": cport,
        "health_path": health_path,
        "health_expect": expect if expect is not None else {"status": "healthy"},
        "healthcheck": ["CMD", "python3", "-c", _PY_HEALTH % (cport, health_path)] if health_path else None,
        "memory": memory,
        "env_file": env_file,
        "volumes": volumes or {},
    }


ingestor_services = {
    "influxdb": {
        "image": "influxdb:2.7",
        "build": None,
        "source": [],
        "port": 8086,
        "container_port": 8086,
        "health_path": "/health",
        "health_expect": {"status": "pass"},
        "healthcheck": ["CMD", "influx", "ping"],
        "memory": "512m",
        "env_file": "influxdb",
        "volumes": {"influxdb_data": "/var/lib/influxdb2", "influxdb_config": "/etc/influxdb2"},
    },
    # the websocket reports Home Assistant authentication in its health JSON
    "websocket-ingestion": _service("websocket-ingestion", 8001, env_file="websocket",
                                    expect={"status": "healthy", "home_assistant": "authenticated"}),
    "enrichment-pipeline": _service("enrichment-pipeline", 8002),
    "admin-api": _service("admin-api", 8003),
    "data-api": _service("data-api", 8006, volumes={"data_api_sqlite": "/app/data"},
                         expect={"status": "healthy", "databases.influxdb": "connected",
                                 "databases.sqlite": "connected"}),
    # no port in the plan: internal only, docker's healthcheck is its gate
    "data-retention": {**_service("data-retention", None, container_port=8080, health_path=None),
                       "healthcheck": ["CMD", "python3", "-c", _PY_HEALTH % (8080, "/health")]},
    "sports-data": _service("sports-data", 8005, volumes={"sports_data_sqlite": "/app/data"}),
    "health-dashboard": _service("health-dashboard", 3000, container_port=80, health_path="/", memory="50m",
                                 expect={}),
}
# Named volumes (compose names them <project>_<volume>).
ingestor_volumes = ["influxdb_data", "influxdb_config", "data_api_sqlite", "sports_data_sqlite"]
# Container healthcheck timing (tests: seconds).
ingestor_healthcheck_timing = {"interval": "15s", "timeout": "5s", "retries": 5, "start_period": "20s"}
# Build arguments for every built service (e.g. a local base image in tests).
ingestor_build_args = {}
# Extra (non-secret) environment per service, e.g. {"data-api": {"LOG_LEVEL": "DEBUG"}}.
ingestor_service_env = {}

# --- InfluxDB ------------------------------------------------------------------------------
ingestor_influxdb_org = "ha-ingestor"
ingestor_influxdb_bucket = "home_assistant_events"
ingestor_influxdb_retention = "0"  # 0 = infinite (the plan's expected output)
ingestor_influxdb_user = "admin"
# Commands run IN the influxdb container ({path}: a directory in the container).
ingestor_influx_bucket_list = ["influx", "bucket", "list", "--name", "{bucket}", "--hide-headers"]
ingestor_influx_backup = ["influx", "backup", "{path}"]
# A verified backup holds at least one file matching this (influx 2.x writes one per backup).
ingestor_influx_manifest_glob = "*.manifest"

# --- SQLite (Epic 22) ----------------------------------------------------------------------
# service -> {volume, file in it, path in the container}
ingestor_sqlite = {
    "data-api": {"volume": "data_api_sqlite", "file": "metadata.db", "path": "/app/data/metadata.db"},
    "sports-data": {"volume": "sports_data_sqlite", "file": "webhooks.db", "path": "/app/data/webhooks.db"},
}
# The migrated database (Alembic runs in this service's container).
ingestor_migrate_service = "data-api"
ingestor_migrate_command = ["alembic", "upgrade", "head"]
# Where the Alembic revisions live in the source checkout (the head is read from them).
ingestor_alembic_versions = "services/data-api/alembic/versions"
ingestor_expected_tables = ["alembic_version", "devices", "entities"]
ingestor_journal_mode = "wal"

# --- discovery (Phase 6) -------------------------------------------------------------------
# POSTed (from the host) only while the devices table is empty.
ingestor_discovery_url = "http://127.0.0.1:8001/api/discover"
ingestor_discovery_timeout_s = 120

# --- status (make ingestor-status) --------------------------------------------------------
# The plan's query-time targets (ms) on data-api: an error fails, a slower answer is
# reported as SLOW (timings on a busy host vary; the plan's figures are targets).
ingestor_status_queries = {"/api/devices": 10, "/api/entities": 10, "/api/events?limit=100": 50}

# --- preflight + gates ---------------------------------------------------------------------
ingestor_docker_min_version = "24"
preflight_min_disk_mb = 2048
# How long each start-order group may take to turn healthy ("rollback after 5 minutes").
ingestor_health_timeout_s = 300

# (pyinfra would load the helpers above as host data)
del _service, _PY_HEALTH
