"""deploys/parts/{docker_host,compose}.py and deploys/archon.py on disposable Docker hosts.

No registry is reachable, so the stack runs stand-in images built locally
(tests/apps/archon: a real PostgreSQL and one sample HTTP service for everything else),
loaded into the hosts and named through test data. Tests run in order and share hosts:

1. the compose operation alone, on a compose v2 host and a v1-only host: up, then
   "no change", then back up after a container was stopped;
2. Archon on a host carrying the OLD layout (supabase CLI containers, four networks, the
   rebind unit, real rows): a forced failure rolls back to it, then the real migration,
   a second apply with 0 changes, ports, backups restored into a scratch database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from deploys.settings import cli_data_value
from facts.sockets import is_loopback_only, parse_ss
from tests.apps.archon.build import ensure_standin_images
from tests.e2e.ports import open_tcp_ports
from tests.e2e.runner import apply, pyinfra
from tests.harness.fixtures import module_host, test_cluster, test_cluster_hosts  # noqa: F401

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HOST = "archon-1"
V1_HOST = "archon-v1"

SMOKE_DEPLOY = textwrap.dedent('''
    """Compose smoke deploy (written by tests/e2e/test_archon.py): one stand-in service."""
    from pyinfra import host

    from deploys.parts.compose import compose_health_gate, compose_stack, env_file_text, to_yaml
    from deploys.parts.docker_host import docker_host

    data = host.data
    docker_host()
    service = {
        "image": data.smoke_image,
        "restart": "unless-stopped",
        "ports": ["127.0.0.1:18181:8181"],
        "environment": {"STANDIN_NAME": "${GREETING}", "STANDIN_PORTS": "8181"},
        "healthcheck": {"test": ["CMD", "curl", "-fsS", "http://127.0.0.1:8181/health"],
                        "interval": "1s", "timeout": "3s", "retries": 5},
        **(data.get("smoke_extra") or {}),
    }
    compose_stack(
        name="Compose project smoke",
        project="smoke",
        directory="/opt/smoke",
        compose=to_yaml({"services": {"web": service}}),
        env=env_file_text({"GREETING": data.smoke_greeting}),
        env_file=".env",
        services=["web"],
    )
    compose_health_gate("smoke", ["web"], timeout_s=60)
''')


OLD_LAYOUT_SH = r"""
set -eu
H=$1 P=$2 K=$3
label=com.supabase.cli.project=supabase
for n in supabase_network_supabase supabase_network_archon supabase_network_root; do
    docker network create --label "$label" "$n" >/dev/null
done
for v in supabase_db_supabase supabase_storage_supabase supabase_config_supabase; do
    docker volume create --label "$label" "$v" >/dev/null
done
# supabase CLI containers (published on every interface, as `supabase start` does)
docker run -d --name supabase_db_supabase --network supabase_network_supabase --restart unless-stopped \
    --label "$label" -v supabase_db_supabase:/var/lib/postgresql/data -v supabase_config_supabase:/etc/postgresql-custom \
    -e POSTGRES_PASSWORD=postgres \
    -p 54322:5432 "$P" >/dev/null
for spec in kong:54321:8000 rest:: studio:54323:3000 meta::; do
    name=${spec%%:*} ports=${spec#*:}
    publish=""
    [ "$ports" != ":" ] && publish="-p $ports"
    docker run -d --name "supabase_${name}_supabase" --network supabase_network_supabase --restart unless-stopped \
        --label "$label" -e STANDIN_NAME="old-$name" $publish "$H" >/dev/null
done
for i in $(seq 1 60); do docker exec supabase_db_supabase pg_isready -h 127.0.0.1 -q && break; sleep 1; done
docker exec -i supabase_db_supabase psql -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<'SQL'
CREATE TABLE api_keys (id serial PRIMARY KEY, name text NOT NULL, key_hash text NOT NULL,
                       created_at timestamptz DEFAULT now(), last_used_at timestamptz);
INSERT INTO api_keys (name, key_hash) SELECT 'key-' || i, md5(i::text) FROM generate_series(1, 25) i;
-- archon_settings as Archon's migration/complete_setup.sql (ecaece4) creates it
CREATE TABLE archon_settings (id uuid DEFAULT gen_random_uuid() PRIMARY KEY, key varchar(255) UNIQUE NOT NULL,
                              value text, encrypted_value text, is_encrypted boolean DEFAULT false,
                              category varchar(100), description text);
INSERT INTO archon_settings (key, value) SELECT 'SETTING_' || i, 'value ' || i FROM generate_series(1, 40) i;
CREATE TABLE archon_crawled_pages (id bigserial PRIMARY KEY, url text, chunk_number int, content text,
                                   metadata jsonb);
INSERT INTO archon_crawled_pages (url, chunk_number, content, metadata)
    SELECT 'https://docs.example.test/page/' || (i / 10), i % 10, repeat('lorem ipsum ', 50),
           jsonb_build_object('source', 'docs', 'n', i) FROM generate_series(1, 1200) i;
SQL
# the old Archon compose project (/opt/archon, project "archon", app-network + external nets)
mkdir -p /opt/archon/supabase/migrations
echo 'project_id = "supabase"' > /opt/archon/supabase/config.toml
printf 'SUPABASE_URL=http://host.docker.internal:54321\nSUPABASE_SERVICE_KEY=%s\nOPENAI_API_KEY=\n' "$K" > /opt/archon/.env
cat > /opt/archon/docker-compose.yml <<YML
services:
  archon-server:
    image: $H
    container_name: archon-server
    restart: unless-stopped
    ports: ["8181:8181"]
    environment: {STANDIN_NAME: old-archon-server, SUPABASE_URL: "\${SUPABASE_URL}", SUPABASE_SERVICE_KEY: "\${SUPABASE_SERVICE_KEY}", ARCHON_MCP_PORT: '8051'}
    networks: [app-network, supabase_network_archon, supabase_network_supabase]
  archon-mcp:
    image: $H
    container_name: archon-mcp
    restart: unless-stopped
    ports: ["8051:8051"]
    environment: {STANDIN_NAME: old-archon-mcp, SUPABASE_URL: "\${SUPABASE_URL}", SUPABASE_SERVICE_KEY: "\${SUPABASE_SERVICE_KEY}", ARCHON_MCP_PORT: '8051'}
    networks: [app-network, supabase_network_archon]
  archon-frontend:
    image: $H
    container_name: archon-ui
    restart: unless-stopped
    ports: ["3737:3737"]
    environment: {STANDIN_NAME: old-archon-ui}
    networks: [app-network]
networks:
  app-network: {driver: bridge}
  supabase_network_archon: {external: true}
  supabase_network_supabase: {external: true}
YML
cd /opt/archon && docker compose up -d --quiet-pull >/dev/null
cat > /etc/systemd/system/supabase-rebind.service <<UNIT
[Unit]
Description=Rebind Supabase ports to localhost (old layout)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now supabase-rebind.service >/dev/null 2>&1
"""


@pytest.fixture(scope="module")
def images():
    return ensure_standin_images()


@pytest.fixture(scope="module")
def archon(request, test_cluster, images):  # noqa: F811
    host = module_host(request, test_cluster, HOST, groups=["archon", "docker_host"], docker=True)
    for tag in images.values():
        host.load_image(tag)
    return host


@pytest.fixture(scope="module")
def v1_host(request, test_cluster, images):  # noqa: F811
    host = module_host(request, test_cluster, V1_HOST, groups=["archon", "docker_host"], docker="v1")
    host.load_image(images["http"])
    return host


@pytest.fixture(scope="module")
def smoke_deploy(tmp_path_factory):
    path = tmp_path_factory.mktemp("smoke") / "compose_smoke.py"
    path.write_text(SMOKE_DEPLOY)
    return str(path)


def _answer(host, port=18181) -> dict:
    return json.loads(host.exec(f"curl -fsS http://127.0.0.1:{port}/health").stdout)


@pytest.mark.parametrize("which", ["v2", "v1"])
def test_compose_stack_is_idempotent_on_v1_and_v2(which, request, images, smoke_deploy):
    host = request.getfixturevalue("archon" if which == "v2" else "v1_host")
    data = {"smoke_image": images["http"], "smoke_greeting": "hello-1"}
    first = apply(smoke_deploy, limit=host.name, data=data)
    assert first.did("Compose project smoke"), first.changed
    cli = "docker compose" if which == "v2" else "docker-compose"
    assert f"({cli})" in first.output, first.output[-2000:]
    assert _answer(host)["service"] == "hello-1"
    env = host.testinfra().file("/opt/smoke/.env")
    assert env.mode == 0o600 and env.user == "root"
    config = json.loads(host.exec("cat /etc/docker/daemon.json").stdout)
    assert config["log-opts"] == {"max-size": "10m", "max-file": "3"}

    second = apply(smoke_deploy, limit=host.name, data=data)
    assert second.changed == [], second.changed

    host.exec("docker stop smoke-web-1 2>/dev/null || docker stop smoke_web_1")
    third = apply(smoke_deploy, limit=host.name, data=data)
    assert third.changed == ["Compose project smoke"], third.changed
    assert _answer(host)["service"] == "hello-1"

    changed = apply(smoke_deploy, limit=host.name, data={**data, "smoke_greeting": "hello-2"})
    assert changed.changed == ["Compose project smoke"], changed.changed
    assert _answer(host)["service"] == "hello-2"


def test_docker_host_keeps_the_engine_and_the_operators_daemon_json(archon, images, smoke_deploy):
    """An engine already installed stays as it is (docker_package_source "docker" is not
    applied over docker.io), an operator's daemon.json key survives every apply, and
    dockerd is not restarted: not at all when nothing changed, reloaded (same process) for
    a key it re-reads on SIGHUP."""
    def dockerd():
        return archon.exec("systemctl show -p MainPID -p ExecMainStartTimestamp --value docker.service").stdout

    config = json.loads(archon.exec("cat /etc/docker/daemon.json").stdout)
    archon.write_file("/etc/docker/daemon.json", json.dumps({**config, "default-shm-size": "96M"}, indent=2))
    engine, before = archon.exec("dpkg-query -W docker.io").stdout, dockerd()
    data = {"smoke_image": images["http"], "smoke_greeting": "hello-2", "docker_package_source": "docker"}
    run = apply(smoke_deploy, limit=HOST, data=data)
    assert run.changed == [], run.changed
    assert "Docker engine (kept as installed)" in run.output  # detected: no engine package asked of apt
    flipped = apply(smoke_deploy, limit=HOST, data={**data, "docker_live_restore": False})
    assert flipped.changed == ["Docker host | /etc/docker/daemon.json merged (log rotation 10m x 3)"], flipped.changed
    assert archon.exec("docker info --format '{{.LiveRestoreEnabled}}'").stdout.strip() == "false"
    assert apply(smoke_deploy, limit=HOST, data=data).changed == flipped.changed  # back: reloaded again
    assert archon.exec("docker info --format '{{.LiveRestoreEnabled}}'").stdout.strip() == "true"
    assert dockerd() == before  # never restarted
    assert json.loads(archon.exec("cat /etc/docker/daemon.json").stdout)["default-shm-size"] == "96M"
    assert archon.exec("dpkg-query -W docker.io").stdout == engine
    assert archon.exec("dpkg-query -W -f='${db:Status-Status}' docker-ce", check=False).stdout.strip() != "installed"
    assert archon.exec("ls /etc/apt/sources.list.d/docker.list", check=False).returncode != 0
    assert _answer(archon)["service"] == "hello-2"


def test_compose_rejected_config_leaves_live_files(v1_host, images, smoke_deploy):
    """A file `config` rejects never replaces the live one; a value compose v1 and v2 would
    read differently stops the run before it connects."""
    before = v1_host.exec("sha256sum /opt/smoke/docker-compose.yml /opt/smoke/.env").stdout
    data = {"smoke_image": images["http"], "smoke_greeting": "hello-2"}
    run = pyinfra(smoke_deploy, limit=V1_HOST, data={**data, "smoke_extra": {"ports": ["127.0.0.1:x:8181"]}})
    assert run.returncode != 0
    assert "compose rejected the new config of smoke" in run.output, run.output[-3000:]
    run = pyinfra(smoke_deploy, limit=V1_HOST, data={**data, "smoke_greeting": "x y"})
    assert run.returncode != 0
    assert "holds characters compose v1/v2 read differently" in run.output
    assert v1_host.exec("sha256sum /opt/smoke/docker-compose.yml /opt/smoke/.env").stdout == before
    assert not v1_host.exec("ls /opt/smoke/*.new 2>/dev/null", check=False).stdout
    assert _answer(v1_host)["service"] == "hello-2"


# ----------------------------------------------------------------------------- Archon

ARCHON = "archon.archon.test"
STUDIO = "studio.archon.test"
OPENAI = "sk-e2e-" + base64.urlsafe_b64encode(os.urandom(12)).decode().replace("-", "x").replace("_", "y")
ENV = {"OPENAI_API_KEY": OPENAI}
UI_EXTRA_NAME = "ui-extra.archon.test"
STACK_PORTS = (54321, 54322, 54323, 8181, 8051, 3737)
GENERATED = ("POSTGRES_PASSWORD", "JWT_SECRET", "ARCHON_BOOTSTRAP_SECRET", "DASHBOARD_PASSWORD", "SUPABASE_ANON_KEY",
             "SUPABASE_SERVICE_KEY")
COUNT_SQL = ("SELECT 'api_keys', count(*) FROM api_keys UNION ALL SELECT 'archon_settings', count(*) FROM "
             "archon_settings UNION ALL SELECT 'archon_crawled_pages', count(*) FROM archon_crawled_pages "
             "UNION ALL SELECT 'checksum', sum(hashtext(content))::text::bigint FROM archon_crawled_pages")


SERVICES = ("postgres", "kong", "rest", "studio", "meta", "archon-server", "archon-mcp", "archon-ui", "archon-agents")
# The old layout's keys: the supabase CLI's default JWT secret and a service_role key signed with it
OLD_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
STORED_SECRET = "sk-stored-" + base64.urlsafe_b64encode(os.urandom(12)).decode().replace("-", "x").replace("_", "y")


def jwt_hs256(secret: str, claims: dict) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signing = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    return signing + "." + b64(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())


OLD_SERVICE_KEY = jwt_hs256(OLD_JWT_SECRET, {"iss": "supabase-demo", "role": "service_role", "exp": 1983812996})


def _fernet(service_key: str) -> Fernet:
    """Archon's credential key (ecaece4 python/src/server/services/credential_service.py
    _get_encryption_key): PBKDF2-SHA256 of SUPABASE_SERVICE_KEY, fixed salt, 100000 rounds."""
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=b"static_salt_for_credentials", iterations=100000)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(service_key.encode())))


def encrypt_credential(service_key: str, value: str) -> str:
    return base64.urlsafe_b64encode(_fernet(service_key).encrypt(value.encode())).decode()


def decrypt_credential(service_key: str, stored: str) -> str:
    return _fernet(service_key).decrypt(base64.urlsafe_b64decode(stored.encode())).decode()


def archon_data(images, names=(ARCHON, STUDIO), fail=None, **extra) -> dict:
    """Test data: stand-in images (each HTTP one answers with its service name), seconds-long
    healthchecks, a private subnet. `fail`: a service whose stand-in never turns healthy."""
    service_env = {s: {"STANDIN_NAME": s} for s in SERVICES if s != "postgres"}
    if fail:
        service_env[fail]["STANDIN_HEALTH"] = "fail"
    return {
        "archon_images": {s: images["postgres" if s == "postgres" else "http"] for s in SERVICES},
        "archon_service_env": service_env,
        "archon_healthcheck_timing": {"interval": "1s", "timeout": "5s", "retries": 5, "start_period": "2s"},
        # Supabase's init on a new volume (a busy CI machine): a success ends it early
        "archon_healthcheck_timing_by_service": {"postgres": {"start_period": "180s"}},
        "archon_network_subnet": "10.213.0.0/24",
        "archon_public_name": names[0],
        "archon_studio_public": True,  # (closed by default) served through Kong's basic-auth
        "archon_studio_name": names[1],
        "archon_allowed_hosts": [UI_EXTRA_NAME],  # (+ the public names) the UI's VITE_ALLOWED_HOSTS
        "archon_health_timeout_s": 90,
        "archon_health_ca_file": "/etc/archon/test-acme-root.pem",
        "nginx_listen_ipv6": False,
        # the stand-in of Archon's migration/ (complete_setup.sql), uploaded to the host
        "archon_migration_source": str(Path(__file__).resolve().parents[2] / "tests/apps/archon/migration"),
        **extra,
    }


def deploy_archon(host, data, check=True):
    run = (apply if check else pyinfra)("deploys/archon.py", limit=host.name, env=ENV, data=data)
    return run


def psql(host, container, sql) -> str:
    return host.exec(["docker", "exec", container, "psql", "-U", "postgres", "-d", "postgres", "-XAtq",
                      "-F", " ", "-c", sql]).stdout


def host_secrets(host) -> dict:
    out = host.exec("cat /etc/archon/generated.env").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith("#"))


def names(host, kind) -> set[str]:
    return set(host.exec(f"docker {kind} ls --format '{{{{.Name}}}}'" if kind != "container"
                         else "docker ps -a --format '{{.Names}}'").stdout.split())


@pytest.fixture(scope="module")
def old_layout(archon, images, test_cluster):  # noqa: F811
    """archon-1 as the plan describes today's server: old containers, networks, rows."""
    for name in (ARCHON, STUDIO):
        test_cluster.set_record(name, archon.address)
    archon.exec(["docker", "compose", "-p", "smoke", "-f", "/opt/smoke/docker-compose.yml", "down"], check=False)
    archon.exec(["bash", "-s", images["http"], images["postgres"], OLD_SERVICE_KEY], input=OLD_LAYOUT_SH, timeout=300)
    # a provider key Archon stored through its settings API, encrypted with the old service key
    stored = encrypt_credential(OLD_SERVICE_KEY, STORED_SECRET)
    psql(archon, "supabase_db_supabase", "INSERT INTO archon_settings (key, encrypted_value, is_encrypted, category) "
         f"VALUES ('OPENAI_API_KEY', '{stored}', true, 'api_keys')")
    archon.write_file("/etc/archon/test-acme-root.pem", test_cluster.acme_root_file().read_text())
    key = archon.exec("docker exec supabase_db_supabase cat /etc/postgresql-custom/pgsodium_root.key").stdout
    return {"counts": psql(archon, "supabase_db_supabase", COUNT_SQL), "pgsodium_key": key}


def test_fresh_install_with_compose_v1(v1_host, images, test_cluster):  # noqa: F811
    """Debian 12's docker-compose 1.29 (no v2 plugin): the whole stack, twice."""
    v1_host.load_image(images["postgres"])
    assert v1_host.exec("docker compose version", check=False).returncode != 0  # no v2 plugin here
    data = archon_data(images, archon_proxy=False)
    first = deploy_archon(v1_host, data)
    assert "(docker-compose)" in first.output
    second = deploy_archon(v1_host, data)
    assert second.changed == [], second.changed
    ps = v1_host.exec("cd /opt/archon && docker-compose ps --services --filter status=running").stdout.split()
    assert sorted(ps) == sorted(s for s in SERVICES if s != "archon-agents")
    assert json.loads(v1_host.exec("curl -fsS http://127.0.0.1:8181/health").stdout)["service"] == "archon-server"
    # Archon's schema ran after Supabase's init, with upstream's migration tracking
    assert psql(v1_host, "archon-postgres", "SELECT count(*) FROM archon_migrations WHERE version = '0.1.0'").strip() == "11"
    # as postgres (not a superuser), like supabase/postgres 17 with pgvector: upstream's vector columns
    assert psql(v1_host, "archon-postgres", "SELECT e.extversion, t.typowner::regrole FROM pg_extension e, pg_type t "
                "WHERE e.extname = 'vector' AND t.typname = 'vector'").split() == ["0.8.0", "supabase_admin"]
    assert psql(v1_host, "archon-postgres", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                "attrelid = 'archon_crawled_pages'::regclass AND attname = 'embedding_1536'").strip() == "vector(1536)"
    assert psql(v1_host, "archon-postgres", "SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'").strip() == "f"


def test_failed_migration_rolls_back_to_the_old_layout(archon, old_layout, images):
    """archon-server never turns healthy: the run fails with the reason, the old layout
    is back and serving, its data intact, the new stack and its volume gone."""
    before = {kind: names(archon, kind) for kind in ("container", "network", "volume")}
    run = deploy_archon(archon, archon_data(images, fail="archon-server", archon_health_timeout_s=60), check=False)
    assert run.returncode != 0
    assert "FAILED in phase 5 (start the stack)" in run.output and "archon-server is unhealthy" in run.output, run.output[-4000:]
    assert "ROLLED BACK: the old layout runs again with its data" in run.output
    for kind, wanted in before.items():
        assert names(archon, kind) == wanted, kind
    running = archon.exec("docker ps --format '{{.Names}}'").stdout.split()
    assert set(running) == before["container"]
    assert psql(archon, "supabase_db_supabase", COUNT_SQL) == old_layout["counts"]
    assert json.loads(archon.exec("curl -fsS http://127.0.0.1:8181/health").stdout)["service"] == "old-archon-server"
    assert archon.exec("systemctl is-active supabase-rebind.service").stdout.strip() == "active"
    assert not archon.testinfra().file("/opt/archon/.migrated").exists
    assert archon.testinfra().file("/opt/archon/docker-compose.yml").content_string.count("old-archon") == 3


def test_migration_cut_off_midway_is_finished_and_the_old_layout_removed(archon, old_layout, images):
    """The migration runs as the transient unit archon-migrate.service: pyinfra (and its SSH
    session) killed once the old stack is stopping leaves it running; the next apply waits
    for it (or finds it done), goes on from there and removes the old layout."""
    since = archon.exec("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()  # (the rolled-back try is in the journal too)
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", "deploys/archon.py", "-y", "--limit", HOST]
    for key, value in archon_data(images).items():
        cmd += ["--data", f"{key}={cli_data_value(value)}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "DEPLOY_ENV": "test", "PYINFRA_PROGRESS": "off", **ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        archon.exec(f"for i in $(seq 1500); do journalctl -q -o cat -u archon-migrate.service --since '{since}' "
                    "| grep -q 'phase 2:' && exit 0; sleep 0.2; done; exit 1", timeout=400)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert archon.exec("systemctl is-active archon-migrate.service", check=False).stdout.strip() == "active"
    # this apply waits for the cut-off run's migration, then does all the rest: both in its time
    run = apply("deploys/archon.py", limit=HOST, env=ENV, data=archon_data(images), timeout=1800)
    journal = archon.exec("journalctl -q -o cat -u archon-migrate.service").stdout
    last = journal.split("phase 2:")[-1]  # the cut-off run finished, or it rolled back and this apply retried
    assert "phase 6 done: migrated" in last and "ROLLED BACK" not in last, journal[-3000:]
    assert archon.exec("systemctl is-active archon-migrate.service", check=False).stdout.strip() != "active"
    assert psql(archon, "archon-postgres", COUNT_SQL) == old_layout["counts"]
    assert names(archon, "network") == {"archon_production", "bridge", "host", "none"}
    assert names(archon, "volume") == {"archon_postgres_data", "archon_postgres_config"}
    assert names(archon, "container") == {
        "archon-postgres", "archon-kong", "archon-rest", "archon-studio", "archon-meta",
        "archon-server", "archon-mcp", "archon-ui"}
    t = archon.testinfra()
    assert not t.file("/etc/systemd/system/supabase-rebind.service").exists
    assert archon.exec("systemctl is-active supabase-rebind.service", check=False).stdout.strip() != "active"
    assert json.loads(archon.exec("curl -fsS http://127.0.0.1:8181/health").stdout)["service"] == "archon-server"
    # plain `docker compose` in /opt/archon now means the new stack
    ps = archon.exec("cd /opt/archon && docker compose ps --format '{{.Name}} {{.Health}}'").stdout.split("\n")
    assert sorted(line.split()[0] for line in ps if line) == sorted(names(archon, "container"))
    backup = archon.exec("cat /opt/archon/.migrated").stdout.strip()
    listing = archon.exec(f"ls {backup}").stdout.split()
    for name in ("archon-db.sql", "archon-schemas.sql", "archon-config.tar.gz", "postgres-volume.tar.gz", "migrate.log",
                 "old-layout", "volume-supabase_storage_supabase.tar.gz", "volume-supabase_config_supabase.tar.gz"):
        assert name in listing  # every volume the cleanup removed is in the backup
    assert archon.exec(f"stat -c %a {backup}").stdout.strip() == "700"
    secrets = host_secrets(archon)
    assert not [name for name, value in secrets.items() if value in run.output]
    assert OPENAI not in run.output


def container_env(host, container) -> dict:
    out = host.exec(["docker", "inspect", "-f", "{{json .Config.Env}}", container]).stdout
    return dict(item.split("=", 1) for item in json.loads(out))


def test_stored_credentials_decrypt_after_the_migration(archon):
    """Archon's stored provider keys are encrypted with a key derived from
    SUPABASE_SERVICE_KEY: the migrated stack must run with the old key (and the JWT secret
    that signed it), or every stored key is silently unreadable."""
    stored = psql(archon, "archon-postgres", "SELECT encrypted_value FROM archon_settings WHERE key = 'OPENAI_API_KEY'").strip()
    server_key = container_env(archon, "archon-server")["SUPABASE_SERVICE_KEY"]
    assert decrypt_credential(server_key, stored) == STORED_SECRET
    jwt_secret = container_env(archon, "archon-rest")["PGRST_JWT_SECRET"]
    header, payload, signature = server_key.split(".")
    assert _b64(signature) == hmac.new(jwt_secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()


def test_the_new_database_is_a_supabase_database(archon):
    """supabase_admin is the only superuser, the API roles and auth.role() exist (Supabase's
    init ran), the pgsodium key sits on a volume."""
    roles = psql(archon, "archon-postgres", "SELECT rolname, rolsuper FROM pg_roles WHERE rolname IN "
                 "('postgres', 'supabase_admin', 'anon', 'authenticated', 'service_role', 'authenticator') ORDER BY 1")
    assert roles.splitlines() == ["anon f", "authenticated f", "authenticator f", "postgres f", "service_role f",
                                 "supabase_admin t"]
    assert psql(archon, "archon-postgres", "SELECT auth.role() IS NULL").strip() == "t"
    mounts = json.loads(archon.exec("docker inspect -f '{{json .Mounts}}' archon-postgres").stdout)
    assert {m["Destination"]: m["Type"] for m in mounts}.get("/etc/postgresql-custom") == "volume"


def test_the_pgsodium_key_came_along(archon, old_layout):
    key = archon.exec("docker exec archon-postgres cat /etc/postgresql-custom/pgsodium_root.key").stdout
    assert key == old_layout["pgsodium_key"] and len(key) == 64


def test_second_apply_changes_nothing_and_keeps_the_secrets(archon, images):
    before = host_secrets(archon)
    env_sum = archon.exec("sha256sum /opt/archon/.env.production").stdout
    run = deploy_archon(archon, archon_data(images))
    assert run.changed == [], run.changed
    assert host_secrets(archon) == before
    assert archon.exec("sha256sum /opt/archon/.env.production").stdout == env_sum
    assert not [name for name, value in before.items() if value in run.output]


def test_a_subnet_overlapping_a_docker_network_stops_before_any_change(archon, images):
    bridge = archon.exec("docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' bridge").stdout.strip()
    run = deploy_archon(archon, archon_data(images, archon_network_subnet=bridge), check=False)
    assert run.returncode != 0 and f"overlaps Docker network(s) bridge ({bridge})" in run.output, run.output[-2000:]
    assert "Beginning operation run" not in run.output  # refused at prepare: nothing executed


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_env_file_holds_generated_secrets_and_signed_supabase_keys(archon):
    env = archon.testinfra().file("/opt/archon/.env.production")
    assert env.mode == 0o600 and env.user == "root"
    values = dict(line.split("=", 1) for line in env.content_string.splitlines() if "=" in line and not line.startswith("#"))
    assert values["OPENAI_API_KEY"] == OPENAI and len(values["JWT_SECRET"]) >= 32
    for name, role in (("SUPABASE_ANON_KEY", "anon"), ("SUPABASE_SERVICE_KEY", "service_role")):
        header, payload, signature = values[name].split(".")
        digest = hmac.new(values["JWT_SECRET"].encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        assert _b64(signature) == digest and json.loads(_b64(payload))["role"] == role
    assert OPENAI not in archon.exec("cat /opt/archon/docker-compose.production.yml").stdout
    # the generated password logs in over the network address (127.0.0.1 is trusted), a wrong one does not
    ip = archon.exec("docker inspect -f '{{(index .NetworkSettings.Networks \"archon_production\").IPAddress}}' archon-postgres").stdout.strip()
    login = "docker exec archon-postgres sh -c 'PGPASSWORD={} psql -h {} -U supabase_admin -d postgres -Atc \"select 1\"'"
    assert archon.exec(login.format("$POSTGRES_PASSWORD", ip)).stdout.strip() == "1"
    assert archon.exec(login.format("wrong", ip), check=False).returncode != 0


def test_backups_restore_into_a_scratch_database(archon, old_layout, images):
    backup = archon.exec("cat /opt/archon/.migrated").stdout.strip()
    scratch = "archon-e2e-scratch"
    archon.exec(f"docker rm -f {scratch} {scratch}-vol >/dev/null 2>&1; docker volume rm -f {scratch} >/dev/null 2>&1", check=False)
    try:
        # the whole-cluster dump into a bare cluster (the image's init hidden), as its superuser
        archon.exec(f"docker run -d --name {scratch} --tmpfs /docker-entrypoint-initdb.d -e POSTGRES_PASSWORD=scratch {images['postgres']}")
        archon.exec(f"for i in $(seq 60); do docker exec {scratch} pg_isready -h 127.0.0.1 -q && exit 0; sleep 1; done; exit 1")
        archon.exec(f"docker exec -i {scratch} psql -h 127.0.0.1 -U supabase_admin -d postgres -Xq < {backup}/archon-db.sql", timeout=180)
        assert psql(archon, scratch, COUNT_SQL) == old_layout["counts"]
        # the data-volume tarball is a PostgreSQL data directory that starts and has the rows
        archon.exec(f"docker volume create {scratch} >/dev/null && docker run --rm --entrypoint tar -v {scratch}:/target "
                    f"-v {backup}:/backup:ro {images['postgres']} xzf /backup/postgres-volume.tar.gz -C /target")
        archon.exec(f"docker run -d --name {scratch}-vol -v {scratch}:/var/lib/postgresql/data {images['postgres']}")
        archon.exec(f"for i in $(seq 60); do docker exec {scratch}-vol pg_isready -h 127.0.0.1 -q && exit 0; sleep 1; done; exit 1")
        assert psql(archon, f"{scratch}-vol", COUNT_SQL) == old_layout["counts"]
        config = archon.exec(f"tar tzf {backup}/archon-config.tar.gz").stdout.split()
        assert {"docker-compose.yml", ".env", "supabase/config.toml"} <= set(config)
    finally:
        archon.exec(f"docker rm -f {scratch} {scratch}-vol >/dev/null 2>&1; docker volume rm -f {scratch} >/dev/null 2>&1", check=False)


def test_make_archon_restore_puts_a_backup_back(archon, old_layout):
    """`make archon-restore BACKUP=<dir>`: the database as in the backup (rows and the
    stored credential), the one it replaced kept in a backup of its own."""
    backup = archon.exec("cat /opt/archon/.migrated").stdout.strip()
    psql(archon, "archon-postgres", "DELETE FROM api_keys WHERE id > 5; UPDATE archon_settings SET encrypted_value = 'x'")
    assert psql(archon, "archon-postgres", COUNT_SQL) != old_layout["counts"]
    run = subprocess.run(["make", "archon-restore", f"BACKUP={backup}", f"LIMIT={HOST}"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert f"RESTORED from {backup}" in run.stdout + run.stderr
    assert psql(archon, "archon-postgres", COUNT_SQL) == old_layout["counts"]
    stored = psql(archon, "archon-postgres", "SELECT encrypted_value FROM archon_settings WHERE key = 'OPENAI_API_KEY'").strip()
    assert decrypt_credential(container_env(archon, "archon-server")["SUPABASE_SERVICE_KEY"], stored) == STORED_SECRET
    before = archon.exec("ls -d /root/backups/archon-*-before-restore").stdout.split()
    assert len(before) == 1 and "archon-schemas.sql" in archon.exec(f"ls {before[0]}").stdout
    # a bad argument changes nothing
    bad = subprocess.run(["make", "archon-restore", "BACKUP=/nonexistent", f"LIMIT={HOST}"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0


def test_only_ssh_and_https_answer_from_another_host(archon, test_cluster, request):  # noqa: F811
    probe = module_host(request, test_cluster, "archon-probe")
    assert open_tcp_ports(probe, archon.address) == [22, 80, 443]
    sockets = parse_ss(archon.exec("ss -H -tulnp").stdout.splitlines())
    for port in STACK_PORTS:
        assert is_loopback_only(sockets, port, "tcp"), [s for s in sockets if s["port"] == port]


def https(test_cluster, host, name, path="/", auth=None):  # noqa: F811
    with httpx.Client(verify=test_cluster.acme_ssl_context(), timeout=10, auth=auth) as client:
        return client.get(f"https://{host.address}{path}", headers={"Host": name}, extensions={"sni_hostname": name})


def ui_status(host, name) -> str:
    """The UI's answer on its loopback port to `Host: name` (Vite's allowedHosts guard)."""
    return host.exec(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {name}' http://127.0.0.1:3737/").stdout


def test_vhosts_route_ui_api_websocket_and_studio(archon, test_cluster):  # noqa: F811
    ui = https(test_cluster, archon, ARCHON, "/").json()  # nginx forwards the name as Host: in VITE_ALLOWED_HOSTS
    assert (ui["service"], ui["port"]) == ("archon-ui", 3737)
    # the guard is live (the real UI's Vite 403s an unlisted name); the deploy listed the others
    assert ui_status(archon, "unlisted.archon.test") == "403"
    assert [ui_status(archon, name) for name in (STUDIO, UI_EXTRA_NAME)] == ["200", "200"]
    assert https(test_cluster, archon, ARCHON, "/api/health").json() == {
        "status": "healthy", "service": "archon-server", "port": 8181, "path": "/api/health"}
    closed = https(test_cluster, archon, STUDIO, "/")
    assert closed.status_code == 401 and closed.headers["www-authenticate"] == 'Basic realm="kong"'
    assert https(test_cluster, archon, STUDIO, "/", auth=("supabase", "wrong")).status_code == 401
    studio = https(test_cluster, archon, STUDIO, "/", auth=("supabase", host_secrets(archon)["DASHBOARD_PASSWORD"])).json()
    assert (studio["service"], studio["port"]) == ("studio", 3000)
    redirect = httpx.get(f"http://{archon.address}/x", headers={"Host": STUDIO}, timeout=10)
    assert redirect.status_code == 301 and redirect.headers["location"] == f"https://{STUDIO}/x"
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((archon.address, 443), timeout=10) as raw:
        with test_cluster.acme_ssl_context().wrap_socket(raw, server_hostname=ARCHON) as tls:
            tls.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {ARCHON}\r\n"
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += tls.recv(1024)
            assert head.startswith(b"HTTP/1.1 101"), head
            mask, payload = os.urandom(4), b"ping"
            tls.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            assert tls.recv(1024)[2:] == payload


def test_health_check_script_on_a_timer(archon):
    assert archon.exec("systemctl is-enabled archon-health-check.timer").stdout.strip() == "enabled"
    out = archon.exec("systemctl start archon-health-check.service && journalctl -u archon-health-check -o cat --no-pager | tail -30")
    assert "HEALTHY" in out.stdout and "FAIL" not in out.stdout, out.stdout


def _health_check(host) -> str:
    host.exec("systemctl start archon-health-check.service", check=False)
    return host.exec("journalctl -u archon-health-check -o cat --no-pager | tail -40").stdout.rsplit("=== Container status ===", 1)[-1]


def test_api_auth_check_proves_that_a_request_without_a_key_is_refused(archon, images):
    """archon_api_auth: the health check fails while the API answers without a key, and
    passes once it refuses (401) and accepts the key, which curl reads from a header file."""
    run = deploy_archon(archon, archon_data(images, archon_api_auth=True))
    assert run.changed, run.changed
    out = _health_check(archon)
    assert "answered 200 without a key (want 401 or 403)" in out and "UNHEALTHY" in out, out
    key = "e2e-" + os.urandom(8).hex()
    archon.write_file("/etc/archon/health.env", f"API_KEY={key}\n", mode="0600")
    archon.exec("chmod 600 /etc/archon/health.env")
    data = archon_data(images, archon_api_auth=True)
    data["archon_service_env"]["archon-server"]["STANDIN_API_KEY"] = key
    deploy_archon(archon, data)
    out = _health_check(archon)
    assert "refuses a request without a key (401)" in out and "HEALTHY" in out and "FAIL" not in out, out
    assert key not in archon.exec("cat /opt/archon/bin/archon-health-check").stdout


OPERATOR_VHOST = """
server {
    listen 80;
    server_name %(name)s;
    location /.well-known/acme-challenge/ { root /var/www/acme; }
    location / { return 301 https://$host$request_uri; }
}
server {
    listen 443 ssl;
    server_name %(name)s;
    ssl_certificate /etc/letsencrypt/live/archon-multi/fullchain.pem;
    ssl_certificate_key /etc/letsencrypt/live/archon-multi/privkey.pem;
    location / {
        proxy_pass http://127.0.0.1:3737;
        proxy_set_header Host $host;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
    }
}
"""


def _serial(host, lineage) -> str:
    return host.exec(f"openssl x509 -noout -serial -in /etc/letsencrypt/live/{lineage}/cert.pem").stdout.strip()


def test_an_existing_nginx_is_adopted_map_vhost_and_multi_name_certificate(archon, images, test_cluster):  # noqa: F811
    """The operator's nginx as the plan finds it: their own `map $http_upgrade`, their
    vhost for the UI's name, one certificate for both names. The deploy adds no second map
    and no second vhost, serves Studio's name with that certificate, and issues nothing."""
    server = archon.exec(f"awk '$1 == \"server\" {{print $3}}' /etc/letsencrypt/renewal/{ARCHON}.conf").stdout.strip()
    archon.exec(f"REQUESTS_CA_BUNDLE=/etc/letsencrypt/infra-acme-ca.pem certbot certonly -n --agree-tos "
                f"--email ops@archon.test --server {server} --webroot -w /var/www/acme --cert-name archon-multi "
                f"-d {ARCHON} -d {STUDIO}", timeout=180)
    archon.exec(f"certbot delete -n --cert-name {ARCHON} && certbot delete -n --cert-name {STUDIO} && "
                "rm -f /etc/nginx/sites-enabled/archon /etc/nginx/sites-available/archon /etc/nginx/conf.d/infra-websocket.conf")
    archon.write_file("/etc/nginx/conf.d/operator-upgrade.conf",
                      "map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n")
    archon.write_file("/etc/nginx/sites-available/operator-archon", OPERATOR_VHOST % {"name": ARCHON})
    archon.exec("ln -s /etc/nginx/sites-available/operator-archon /etc/nginx/sites-enabled/ && nginx -t -q && "
                "systemctl reload nginx")
    serial = _serial(archon, "archon-multi")
    key = archon.exec("sed -n 's/^API_KEY=//p' /etc/archon/health.env 2>/dev/null", check=False).stdout.strip()
    data = archon_data(images, archon_api_auth=bool(key))  # (as the API-auth test left it, when it ran)
    if key:
        data["archon_service_env"]["archon-server"]["STANDIN_API_KEY"] = key

    run = deploy_archon(archon, data)
    assert "nginx vhosts adopted (archon.archon.test)" in run.output, run.output[-3000:]
    assert archon.exec("nginx -t", check=False).returncode == 0
    assert sorted(archon.exec("ls /etc/letsencrypt/live").stdout.split()) == ["README", "archon-multi"]
    assert _serial(archon, "archon-multi") == serial  # the lineage was reused, not re-issued
    assert not archon.testinfra().file("/etc/nginx/conf.d/infra-websocket.conf").exists
    dump = archon.exec("nginx -T 2>/dev/null").stdout
    assert dump.count("map $http_upgrade $connection_upgrade") == 1
    for name in (ARCHON, STUDIO):  # one vhost per name and port
        assert len([line for line in dump.splitlines() if line.strip() == f"server_name {name};"]) == 2, name
    ours = archon.exec("cat /etc/nginx/sites-available/archon").stdout
    assert ARCHON not in ours and "/etc/letsencrypt/live/archon-multi/fullchain.pem" in ours
    closed = https(test_cluster, archon, STUDIO, "/")
    assert closed.status_code == 401 and closed.headers["www-authenticate"] == 'Basic realm="kong"'
    assert https(test_cluster, archon, ARCHON, "/").json()["service"] == "archon-ui"  # the operator's vhost
    assert deploy_archon(archon, data).changed == []


# ----------------------------------------------------------------------------- releases

RELEASE_2 = "archon-standin-http:e2e-release-2"  # the stand-in with one label more: another image id
RELEASE_3 = "archon-standin-http:e2e-release-3"  # another id again: the broken release
MOVED = ("archon-server", "archon-mcp", "archon-ui")


def release_data(host, images, image=None, proxy=True) -> dict:
    """The data the module's last apply used (the API-auth test's key, when it ran), with
    the Archon images of `image` when given: another release. `proxy` False: no nginx/TLS
    (the test run alone on a new host)."""
    key = host.exec("sed -n 's/^API_KEY=//p' /etc/archon/health.env 2>/dev/null", check=False).stdout.strip()
    data = archon_data(images, archon_api_auth=bool(key), **({} if proxy else {"archon_proxy": False}))
    if key:
        data["archon_service_env"]["archon-server"]["STANDIN_API_KEY"] = key
    for service in MOVED if image else ():
        data["archon_images"][service] = image
    return data


def labelled_image(host, images, tag: str, release: int) -> str:
    """The http stand-in with a label `archon.e2e.release`: another image id; its id."""
    host.exec(f"docker rm -f e2e-release >/dev/null 2>&1; docker create --name e2e-release {images['http']} "
              f">/dev/null && docker commit --change 'LABEL archon.e2e.release={release}' e2e-release {tag} "
              ">/dev/null && docker rm e2e-release >/dev/null")
    return host.exec(f"docker image inspect --format '{{{{.Id}}}}' {tag}").stdout.strip()


def release_history(host) -> list[dict]:
    out = host.exec("cat /opt/archon/releases/history.jsonl").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def running_image_id(host, container) -> str:
    return host.exec(f"docker inspect --format '{{{{.Image}}}}' {container}").stdout.strip()


def probe_rows(host) -> list[str]:
    return psql(host, "archon-postgres", "SELECT note FROM release_probe ORDER BY note").splitlines()


def test_images_release_listed_rolled_back_with_its_database_and_forward_again(archon, images):
    """`make releases` / `make rollback DEPLOY=archon` (release_action): the migrated stack
    is release 1; new Archon images are release 2 (a database backup first, named in its
    history line); the listing marks it live; the rollback serves release 1 again with the
    database as release 2 found it; the same pinned rollback changes nothing; a plain apply
    goes forward again and says it undoes the rollback; a broken release 3 (archon-server
    never healthy, so `up -d` fails waiting for it) puts release 2 back and fails."""
    alone = archon.exec("test -s /opt/archon/releases/history.jsonl", check=False).returncode != 0
    if alone:  # (-k: the module's migration did not run) a fresh install is release 1
        deploy_archon(archon, release_data(archon, images, proxy=False))
    before = release_history(archon)
    assert before and before[-1]["action"] == "deploy", before  # recorded by the first (migration's) apply
    r1, r1_image = before[-1]["id"], running_image_id(archon, "archon-server")
    psql(archon, "archon-postgres", "CREATE TABLE release_probe (note text); "
         "INSERT INTO release_probe VALUES ('written under release 1')")
    r2_image = labelled_image(archon, images, RELEASE_2, 2)
    assert r2_image != r1_image
    release_2 = release_data(archon, images, RELEASE_2, proxy=not alone)

    up = deploy_archon(archon, release_2)
    assert up.did("Database backup before the images change (a new release)"), up.changed
    entry = release_history(archon)[-1]
    assert entry["action"] == "deploy" and entry["from"] == r1 and entry["id"] != r1, entry
    r2 = entry["id"]
    assert entry["backup"].startswith("/root/backups/archon-release-"), entry
    assert archon.exec(f"grep -c 'written under release 1' {entry['backup']}/archon-schemas.sql").stdout.strip() == "1"
    assert {running_image_id(archon, s) for s in MOVED} == {r2_image}
    assert running_image_id(archon, "archon-kong") == r1_image  # the services whose image stayed

    psql(archon, "archon-postgres", "INSERT INTO release_probe VALUES ('written under release 2')")
    listed = deploy_archon(archon, {**release_2, "release_action": "releases"})
    assert listed.changed == [], listed.changed
    assert f"* {r2}" in listed.output and f"  {r1}" in listed.output, listed.output[-3000:]

    back = deploy_archon(archon, {**release_2, "release_action": "rollback"})
    assert back.did(f"The database of release {before[-1]['components']['images']} (archon-migrate restore)"), back.changed
    assert {running_image_id(archon, s) for s in MOVED} == {r1_image}
    assert probe_rows(archon) == ["written under release 1"]
    assert _answer(archon, 8181)["service"] == "archon-server"
    last = release_history(archon)[-1]
    assert last["action"] == "rollback" and last["id"] == r1 and last["from"] == r2, last
    assert last["backup"] and last["backup"] != entry["backup"]  # the database release 2 left, kept
    assert archon.exec("readlink /opt/archon/images").stdout.strip() == f"releases/images/{last['components']['images']}"

    pinned = deploy_archon(archon, {**release_2, "release_action": "rollback", "release_to": r1})
    assert pinned.changed == [], pinned.changed

    forward = deploy_archon(archon, release_2)
    assert f"warning: release {r1} was put back by a rollback" in forward.output, forward.output[-3000:]
    assert {running_image_id(archon, s) for s in MOVED} == {r2_image}
    assert release_history(archon)[-1]["id"] == r2 and release_history(archon)[-1]["action"] == "deploy"
    assert _answer(archon, 8181)["service"] == "archon-server"

    # release 3, broken: `up -d` itself fails (archon-mcp and archon-ui wait for archon-server
    # healthy), before the gate; the same way back runs there, the run fails saying so
    labelled_image(archon, images, RELEASE_3, 3)
    broken = release_data(archon, images, proxy=not alone)
    broken["archon_images"] = {**release_2["archon_images"], "archon-server": RELEASE_3}
    broken["archon_service_env"]["archon-server"]["STANDIN_HEALTH"] = "fail"
    failed = deploy_archon(archon, broken, check=False)
    assert failed.returncode != 0
    assert "compose up -d failed after the images changed" in failed.output, failed.output[-4000:]
    assert "Rolled back to the previous images; the run fails." in failed.output, failed.output[-4000:]
    assert {running_image_id(archon, s) for s in MOVED} == {r2_image}
    assert _answer(archon, 8181)["service"] == "archon-server"
    assert release_history(archon)[-1]["id"] == r2  # the broken one never recorded
    assert probe_rows(archon) == ["written under release 1"]
    assert deploy_archon(archon, release_2).changed == []  # release 2 serves as deployed
