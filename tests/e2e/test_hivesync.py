"""deploys/hivesync.py on disposable hosts: the Linode server role and the workstation role.

No registry and no Cloudflare account are reachable here, so:
- the stack runs local images (tests/apps/hivesync: the sample backend, which behaves like
  upstream c5680a2 where the deploy touches it (root routes, /health, create_all, no
  Alembic, `uvicorn ... --port 4000`), Debian's redis-server; the Archon tests' PostgreSQL stand-in), loaded into a
  Docker-in-Docker host that plays the Linode: Debian 13 (its engine 26 and compose v2
  from Debian's own packages) stands in for the plan's Ubuntu 22.04 through test data (no
  Ubuntu archive is reachable here); at the end a Debian 12 host (engine 20.10 + the
  compose v2 plugin) runs the server role's core checks too (TestServerOnDebian12);
- the workstation is a second disposable host running a stand-in `wrangler`
  (tests/apps/hivesync/wrangler) that records argv + stdin and validates the toml it gets.
  Real Cloudflare is NOT exercised.

Tests run in order and share the two hosts: refusals that change nothing first, then the
first apply, the checks, the workers, a run over both hosts without workers code, the
port/command knobs and finally the rollbacks.
"""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from facts.firewall import SEPARATOR, parse_ufw
from facts.sockets import is_loopback_only, parse_ss
from tests.apps.hivesync.build import HERE as APP_DIR
from tests.e2e.hivesync_common import (DOMAIN, NPM, SECRETS, WORKERS, WORKERS_SPEC, WRANGLER, checkout, git,  # noqa: F401
                                       images, load_images, stack_data)
from tests.e2e.hivesync_common import token as _token
from tests.e2e.ports import open_tcp_ports
from tests.e2e.runner import apply, pyinfra
from tests.harness.fixtures import module_host, test_cluster, test_cluster_hosts  # noqa: F401

pytestmark = pytest.mark.e2e

SERVER = "hivesync-1"
WORKSTATION = "hivesync-ws"
WRANGLER_LOG = "/var/tmp/wrangler-standin.jsonl"
NPM_LOG = "/var/tmp/npm-standin.jsonl"
R2_OBJECTS = "/var/tmp/wrangler-standin.buckets.objects"
WS_CA = "/etc/hivesync-test/acme-root.pem"
STATE = "/root/.local/state/hivesync/workers"
PLAN_TABLES = {"preview_jobs", "ai_doc_jobs", "worker_nodes", "worker_heartbeats", "audit_logs", "notifications",
               "tasks", "attachments", "teams", "projects", "users"}
# upstream c5680a2's create_all makes 6 of the plan's 11
MISSING_TABLES = {"preview_jobs", "ai_doc_jobs", "worker_nodes", "worker_heartbeats", "attachments"}
GENERATED = {"POSTGRES_PASSWORD", "JWT_SECRET", "API_TOKEN_PEPPER", "SESSION_SECRET", "DEVICE_TOKEN_SECRET",
             "PREVIEW_TOKEN_SECRET", "PREVIEW_DEVICE_CONTEXT_SECRET", "LZ_WEBHOOK_SECRET"}


def linode(request, test_cluster, images, name: str, os: str):  # noqa: F811
    """A Linode stand-in with the stand-in images loaded; the domain's record points at it."""
    host = module_host(request, test_cluster, name, groups=["linode", "docker_host", "hivesync"],
                       data={"hivesync_role": "server"}, docker=True, os=os)
    load_images(host, list(images.values()))
    test_cluster.set_record(DOMAIN, host.address)
    return host


@pytest.fixture(scope="module")
def server(request, test_cluster, images):  # noqa: F811
    return linode(request, test_cluster, images, SERVER, "debian13")


@pytest.fixture(scope="module")
def workstation(request, test_cluster, server):  # noqa: F811
    host = module_host(request, test_cluster, WORKSTATION, groups=["local", "hivesync"],
                       data={"hivesync_role": "workstation"})
    host.write_file(WRANGLER, (APP_DIR / "wrangler").read_text(), mode="0755")
    host.write_file(NPM, (APP_DIR / "npm").read_text(), mode="0755")
    host.write_file(WS_CA, test_cluster.acme_root_pem())
    return host


def server_data(images, server, test_cluster, checkout, **extra) -> dict:  # noqa: F811
    return {
        "supported_os": {"debian": ["12", "13"], "ubuntu": ["22.04"]},
        "hivesync_domain": DOMAIN,
        **stack_data(images, checkout),
        "nginx_listen_ipv6": False,
        "hivesync_external_address": server.address,
        "hivesync_external_ca_file": str(test_cluster.acme_root_file()),
        **extra,
    }


WORKSTATION_DATA = {"hivesync_domain": DOMAIN, "hivesync_wrangler": WRANGLER, "hivesync_npm": NPM,
                    "hivesync_workers_src": "tests/apps/hivesync/workers", "hivesync_workers_ca_file": WS_CA,
                    "hivesync_workers": WORKERS_SPEC}


@pytest.fixture(scope="module")
def data(images, server, test_cluster, checkout):  # noqa: F811
    return server_data(images, server, test_cluster, checkout)


def deploy(limit, data, check=True, env=None):
    return (apply if check else pyinfra)("deploys/hivesync.py", limit=limit, env={**SECRETS, **(env or {})}, data=data)


def untouched(host) -> bool:
    return host.exec("test -e /opt/hivesync || command -v ufw || test -e /etc/hivesync", check=False).returncode != 0


# ----------------------------------------------------------------------------- refusals


def test_missing_secret_stops_before_connecting(server, data):
    run = deploy(SERVER, data, check=False, env={"WORKER_CALLBACK_SECRET": "REPLACE_ME", "R2_ACCOUNT_ID": ""})
    assert run.returncode != 0
    assert "missing or placeholder secrets" in run.output and "R2_ACCOUNT_ID, WORKER_CALLBACK_SECRET" in run.output
    assert untouched(server)


def test_dns_elsewhere_stops_before_any_change(server, workstation, data, test_cluster):  # noqa: F811
    test_cluster.set_record(DOMAIN, workstation.address)
    try:
        run = deploy(SERVER, data, check=False)
    finally:
        test_cluster.set_record(DOMAIN, server.address)
    assert run.returncode != 0
    assert "preflight failed on hivesync-1" in run.output and DOMAIN in run.output, run.output[-3000:]
    assert untouched(server)


def test_firewall_without_the_ssh_port_is_refused(server, data):
    run = deploy(SERVER, {**data, "firewall_allow_tcp": [80, 443]}, check=False)
    assert run.returncode != 0
    assert "omits SSH port 22/tcp that this deploy is connected through" in run.output, run.output[-3000:]
    assert untouched(server)


def test_workers_are_refused_before_the_backend_answers_over_https(workstation):
    run = deploy(WORKSTATION, WORKSTATION_DATA, check=False)
    assert run.returncode != 0
    assert "the backend does not answer over HTTPS yet" in run.output, run.output[-3000:]
    assert workstation.exec(f"test -e {WRANGLER_LOG} || test -e {STATE}", check=False).returncode != 0


# ----------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def first_run(server, data):
    return deploy(SERVER, data)


def test_first_apply_then_a_second_changes_nothing(server, data, first_run):
    assert first_run.did("Compose stack hivesync (backend, postgres, redis)"), first_run.changed
    second = deploy(SERVER, data)
    assert second.changed == [], second.changed


def backend_tags(server) -> list[str]:
    return server.exec("docker image ls hivesync-backend --format '{{.Tag}}'").stdout.split()


def running_image(server) -> str:
    return server.exec("docker inspect --format '{{.Config.Image}}' hivesync-backend").stdout.strip()


def deployed(server) -> dict:
    return dict(line.split(" ", 1) for line in server.exec("cat /opt/hivesync/DEPLOYED").stdout.splitlines())


def test_the_backend_is_built_on_the_host_from_the_synced_source(server, checkout, first_run):
    assert first_run.did(f"Backend image built on the host from {git(checkout, 'rev-parse', 'HEAD')}"), \
        first_run.changed
    assert server.exec("cat /opt/hivesync/build/source/backend/app/REVISION").stdout == "sample source revision 1\n"
    [tag] = backend_tags(server)
    assert tag.startswith("src-") and running_image(server) == f"hivesync-backend:{tag}"
    assert server.exec("docker exec hivesync-backend cat /app/backend/app/REVISION").stdout.startswith("sample source")
    assert deployed(server) == {"image": f"hivesync-backend:{tag}", "commit": git(checkout, "rev-parse", "HEAD"),
                                "ref": "-", "source": str(checkout)}
    status = server.exec("/opt/hivesync/bin/hivesync-status").stdout
    assert git(checkout, "rev-parse", "HEAD") in status and '"ok": true' in status.replace('"ok":true', '"ok": true')


def test_secrets_never_reach_pyinfras_output(server, first_run):
    generated = dict(line.split("=", 1) for line in server.exec("cat /etc/hivesync/generated.env").stdout.splitlines()
                     if "=" in line and not line.startswith("#"))
    assert set(generated) == GENERATED
    for value in [*SECRETS.values(), *generated.values()]:
        assert value not in first_run.output


def test_env_file_is_root_only_and_follows_the_apps_settings(server, first_run):
    env = server.testinfra().file("/opt/hivesync/.env.production")
    assert env.mode == 0o600 and env.user == "root"
    values = dict(line.split("=", 1) for line in env.content_string.splitlines() if "=" in line and not line.startswith("#"))
    assert values["WORKER_CALLBACK_SECRET"] == SECRETS["WORKER_CALLBACK_SECRET"]
    assert values["R2_ACCESS_KEY"] == SECRETS["R2_ACCESS_KEY"] and values["R2_SECRET_KEY"] == SECRETS["R2_SECRET_KEY"]
    assert values["R2_ENDPOINT"] == f"https://{SECRETS['R2_ACCOUNT_ID']}.r2.cloudflarestorage.com"
    assert values["BASE_URL"] == f"https://{DOMAIN}" and values["PORT"] == "4000"
    assert SECRETS["OPENAI_API_KEY"] not in server.exec("cat /opt/hivesync/docker-compose.yml").stdout
    # what the backend itself sees: none of config.py's secrets left at its placeholder
    seen = json.loads(server.exec("curl -fsS http://127.0.0.1:4000/_standin/settings").stdout)
    assert seen["placeholder_secrets"] == []
    assert {k for k, v in seen["r2"].items() if v} == {"R2_BUCKET", "R2_ACCESS_KEY", "R2_SECRET_KEY", "R2_ACCOUNT_ID",
                                                       "R2_ENDPOINT"}


def test_firewall_allows_exactly_ssh_http_https(server, workstation, first_run):
    out = server.exec(f"LC_ALL=C ufw status verbose; echo '{SEPARATOR}'; ufw show added").stdout.splitlines()
    state = parse_ufw(out)
    assert state["active"] and state["defaults"]["incoming"] == "deny"
    assert state["allowed"] == ["22/tcp", "80/tcp", "443/tcp"] and state["other"] == []
    assert sorted(open_tcp_ports(workstation, server.address)) == [22, 80, 443]




def test_backend_postgres_and_redis_listen_on_loopback_only(server, first_run):
    sockets = parse_ss(server.exec("ss -H -tulnp").stdout.splitlines())
    for port in (4000, 5432, 6379):
        assert is_loopback_only(sockets, port, "tcp"), [s for s in sockets if s["port"] == port]


def tables(server) -> set[str]:
    return set(server.exec("docker exec hivesync-postgres psql -U hivesync -d hivesync -Atc "
                           "\"select tablename from pg_tables where schemaname = 'public'\"").stdout.split())


def test_no_alembic_so_the_gate_checks_the_plans_tables_and_warns(server, first_run):
    """The app has no alembic.ini: its create_all made 6 of the plan's 11 tables; the gate
    names the 5 missing ones as a warning (hivesync_missing_tables = "warn")."""
    assert "alembic_version" not in tables(server)
    assert PLAN_TABLES & tables(server) == PLAN_TABLES - MISSING_TABLES
    assert f"tables of the plan missing: {', '.join(sorted(MISSING_TABLES))}" in first_run.output, first_run.output[-4000:]


def https(test_cluster, server, path, **kwargs):  # noqa: F811
    with httpx.Client(verify=test_cluster.acme_ssl_context(), timeout=10) as client:
        return client.request(kwargs.pop("method", "GET"), f"https://{server.address}{path}",
                              headers={"Host": DOMAIN, **kwargs.pop("headers", {})},
                              extensions={"sni_hostname": DOMAIN}, **kwargs)


def test_https_publishes_the_api_without_its_prefix_and_nothing_else(server, test_cluster, first_run):  # noqa: F811
    health = https(test_cluster, server, "/api/health")
    assert health.status_code == 200 and health.json()["ok"] is True
    redirect = httpx.get(f"http://{server.address}/api/health", headers={"Host": DOMAIN}, timeout=10)
    assert redirect.status_code == 301 and redirect.headers["location"] == f"https://{DOMAIN}/api/health"
    user = {"email": f"{_token('u')}@example.com", "password": "correct horse battery"}
    assert https(test_cluster, server, "/api/auth/register", method="POST", json=user).status_code == 200
    assert https(test_cluster, server, "/api/auth/register", method="POST", json=user).status_code == 409
    for path in ("/internal", "/internal/status"):
        assert https(test_cluster, server, path).status_code == 403, path
    # the backend serves /docs and /health at its root; nginx publishes /api/ (+ WebSocket) only
    assert server.exec("curl -fsS -o /dev/null -w '%{http_code}' http://127.0.0.1:4000/docs").stdout == "200"
    for path in ("/docs", "/health", "/openapi.json"):
        assert https(test_cluster, server, path).status_code == 404, path
    for path in ("/api/docs", "/api/openapi.json", "/api/redoc"):  # FastAPI's docs behind the prefix
        assert https(test_cluster, server, path).status_code == 403, path
    # /ws/ reaches the backend (which has no WebSocket route yet: FastAPI's 404 body)
    assert https(test_cluster, server, "/ws/").json() == {"detail": "Not Found"}


# ----------------------------------------------------------------------------- the workers


def wrangler_calls(workstation, *, changing_only: bool = True) -> list[dict]:
    """The stand-in's log; by default only calls that change something at Cloudflare
    (`r2 bucket list` is the read-only fact behind the bucket operation)."""
    out = workstation.exec(f"cat {WRANGLER_LOG} 2>/dev/null || true").stdout
    calls = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [c for c in calls if not (changing_only and c["argv"][:3] == ["r2", "bucket", "list"])]


def test_workers_deployed_after_tls_with_secrets_on_stdin(workstation, first_run):
    run = deploy(WORKSTATION, WORKSTATION_DATA)
    calls = wrangler_calls(workstation)
    deploys = [c for c in calls if c["argv"][0] == "deploy" and "--dry-run" not in c["argv"]]
    # every real deploy right after a dry run of the same worker with the same config
    for index, call in enumerate(calls):
        if call in deploys:
            before = calls[index - 1]
            assert before["argv"][:2] == ["deploy", "--dry-run"] and before["cwd"] == call["cwd"], before
            assert before["config"] == call["config"] and before["status"] == 0
    prod = {c["cwd"].rsplit("/", 1)[1]: c["config"]["env"]["production"] for c in deploys}
    assert prod["preview_builder"]["routes"] == [{"pattern": f"{DOMAIN}/workers/preview/*", "zone_name": DOMAIN}]
    assert prod["ai_docs_processor"]["triggers"] == {"crons": ["*/10 * * * *"]}
    assert prod["worker_callback_relayer"]["routes"] == [{"pattern": f"{DOMAIN}/workers/callback/*"}]
    assert all("routes" not in c["config"]["env"]["dev"] for c in deploys)
    # npm ci in the worker that has a lockfile, before its bundle
    npm = [json.loads(line) for line in workstation.exec(f"cat {NPM_LOG}").stdout.splitlines()]
    assert [(c["argv"], c["cwd"]) for c in npm] == [(["ci", "--no-audit", "--no-fund"], f"{STATE}/preview_builder/src")]
    # the plan's N.6.3 structure, right after the bucket
    puts = [c["argv"][3] for c in calls if c["argv"][:3] == ["r2", "object", "put"]]
    assert puts == [f"hivesync-r2/{p}" for p in ("previews/", "ai-docs/", "logs/workers/", "tasks/attachments/")]
    assert workstation.exec(f"cat {R2_OBJECTS}").stdout.split()[::2] == puts
    puts = [c for c in calls if c["argv"][:2] == ["secret", "put"]]
    creates = [c["argv"] for c in calls if c["argv"][:3] == ["r2", "bucket", "create"]]
    assert creates == [["r2", "bucket", "create", "hivesync-r2"]]  # the plan's "Create R2 bucket", once
    assert calls[0]["argv"][:3] == ["r2", "bucket", "create"]  # before any worker that binds it
    assert sorted(c["cwd"].rsplit("/", 1)[1] for c in deploys) == sorted(WORKERS)  # healthcheck_worker: optional, off
    for call in deploys:
        assert call["argv"] == ["deploy", "--config", "wrangler.toml", "--env", "production"] and call["status"] == 0
        prod = call["config"]["env"]["production"]
        assert prod["vars"]["WORKER_CALLBACK_URL"] == f"https://{DOMAIN}/api/v1/workers/callback"
        assert prod["vars"]["R2_BUCKET"] == "hivesync-r2" and prod["vars"]["AI_MODEL"] == "gpt-4.1"
        assert prod["r2_buckets"] == [{"binding": "R2", "bucket_name": "hivesync-r2"}]
        assert set(call["config"]["env"]) == {"dev", "production"}
    assert len(puts) == len(WORKERS)
    for call in puts:
        assert call["argv"] == ["secret", "put", "WORKER_CALLBACK_SECRET", "--config", "wrangler.toml", "--env",
                                "production"]
        assert call["stdin"] == SECRETS["WORKER_CALLBACK_SECRET"]  # on stdin, never in argv
    assert SECRETS["WORKER_CALLBACK_SECRET"] not in run.output
    leftovers = workstation.exec(f"find {STATE} -name '*.value'").stdout.split()
    assert leftovers == []  # the 0600 stdin file is removed right after


def test_second_workers_run_deploys_nothing(workstation):
    before = len(wrangler_calls(workstation))
    npm_before = workstation.exec(f"wc -l < {NPM_LOG}").stdout
    run = deploy(WORKSTATION, WORKSTATION_DATA)
    assert run.changed == [], run.changed
    assert len(wrangler_calls(workstation)) == before
    assert workstation.exec(f"wc -l < {NPM_LOG}").stdout == npm_before


def test_wrangler_that_cannot_list_buckets_fails_clearly_and_deploys_nothing(workstation):
    before = len(wrangler_calls(workstation, changing_only=False))
    run = deploy(WORKSTATION, {**WORKSTATION_DATA, "hivesync_wrangler": "/bin/false"}, check=False)
    assert run.returncode != 0
    assert "r2 bucket list failed: log wrangler in" in run.output, run.output[-3000:]
    assert len(wrangler_calls(workstation, changing_only=False)) == before


def test_changed_worker_source_redeploys_only_that_worker(workstation, tmp_path):
    """A changed source redeploys that worker; a changed lockfile runs npm ci there; a
    worker whose dry run fails is not deployed (and the run fails)."""
    src = tmp_path / "workers"
    subprocess.run(["cp", "-r", str(APP_DIR / "workers"), str(src)], check=True)
    (src / "ai_docs_processor" / "index.js").write_text("// changed\n" + (src / "ai_docs_processor" / "index.js").read_text())
    lock = src / "preview_builder" / "package-lock.json"
    lock.write_text(lock.read_text().replace('"version": "5.0.18"', '"version": "5.0.19"'))
    before, npm_before = len(wrangler_calls(workstation)), workstation.exec(f"wc -l < {NPM_LOG}").stdout
    run = deploy(WORKSTATION, {**WORKSTATION_DATA, "hivesync_workers_src": str(src)})
    new = wrangler_calls(workstation)[before:]
    assert sorted({c["cwd"].rsplit("/", 1)[1] for c in new}) == ["ai_docs_processor", "preview_builder"]
    assert [c["argv"][:2] for c in new].count(["deploy", "--dry-run"]) == 2
    assert run.did("wrangler deploy ai_docs_processor (when changed)") and run.did("npm ci preview_builder (when package-lock.json changed)")
    assert int(workstation.exec(f"wc -l < {NPM_LOG}").stdout) == int(npm_before) + 1
    # a bundle that cannot resolve an import: the dry run fails, nothing is uploaded
    relayer = src / "worker_callback_relayer" / "index.js"
    relayer.write_text("import pad from 'left-pad';\n" + relayer.read_text())
    before = len(wrangler_calls(workstation))
    bad = deploy(WORKSTATION, {**WORKSTATION_DATA, "hivesync_workers_src": str(src)}, check=False)
    assert bad.returncode != 0 and "worker worker_callback_relayer: wrangler deploy --dry-run failed" in bad.output
    assert [c["argv"][:2] for c in wrangler_calls(workstation)[before:]] == [["deploy", "--dry-run"]]


# ----------------------------------------------------------------------------- workers folder missing


def test_without_a_workers_folder_only_the_workstation_fails_and_the_server_deploys(server, workstation, data,
                                                                                    test_cluster):  # noqa: F811
    """Upstream has no workers yet: a run over both hosts (the README's second step)
    stops the workstation with one message and still applies the server role."""
    run = deploy(None, {**data, **WORKSTATION_DATA, "hivesync_workers_src": "/nonexistent/workers"}, check=False)
    assert run.returncode != 0
    assert "no workers folder /nonexistent/workers" in run.output, run.output[-3000:]
    assert "Traceback" not in run.output
    # the server's operations ran (all no-ops: it was already deployed), only the workers' check failed
    names = [op["name"] for op in run.results["operations"]]
    assert any("Compose stack hivesync" in n for n in names), names
    assert run.failed and all("workers" in n.lower() for n in run.failed), run.failed
    assert https(test_cluster, server, "/api/health").json()["ok"] is True


# ----------------------------------------------------------------------------- port, command, rollback


def test_one_port_setting_moves_the_command_the_container_and_nginx(server, test_cluster, data):  # noqa: F811
    moved = deploy(SERVER, {**data, "hivesync_backend_port": 5000})
    assert moved.did("Compose stack hivesync (backend, postgres, redis)")
    sockets = parse_ss(server.exec("ss -H -tulnp").stdout.splitlines())
    assert is_loopback_only(sockets, 5000, "tcp") and not [s for s in sockets if s["port"] == 4000]
    assert https(test_cluster, server, "/api/health").json()["ok"] is True
    back = deploy(SERVER, data)
    assert back.did("Compose stack hivesync (backend, postgres, redis)")
    assert https(test_cluster, server, "/api/health").json()["ok"] is True


def test_a_failed_gate_without_an_image_change_rolls_back(server, test_cluster, data):  # noqa: F811
    bad = ["uvicorn", "backend.app.nosuch:app", "--host", "0.0.0.0", "--port", "{port}"]
    run = deploy(SERVER, {**data, "hivesync_backend_command": bad, "hivesync_health_timeout_s": 8}, check=False)
    assert run.returncode != 0
    assert "Rolled back the backend to the previous release" in run.output, run.output[-4000:]
    assert "nosuch" not in server.exec("cat /opt/hivesync/docker-compose.yml").stdout
    assert https(test_cluster, server, "/api/health").json()["ok"] is True


def test_broken_release_rolls_back_image_and_database_after_a_verified_backup(server, images, test_cluster, data):  # noqa: F811
    """The broken release's create_all adds a table, then it never turns healthy: the
    previous image comes back and, the schema having changed, the dump taken before the
    change is restored (the new table gone, the user registered earlier still there)."""
    good = server.exec("docker inspect --format '{{.Image}}' hivesync-backend").stdout.strip()
    users = server.exec("docker exec hivesync-postgres psql -U hivesync -d hivesync -Atc "
                        "'select count(*) from users'").stdout.strip()
    assert int(users) >= 1
    run = deploy(SERVER, {**data, "hivesync_backend_image": images["broken"], "hivesync_health_timeout_s": 10},
                 check=False)
    assert run.returncode != 0
    assert "Rolled back the backend to the previous release and restored the database from" in run.output, \
        run.output[-4000:]
    assert "the release had changed the database" in run.output
    assert server.exec("docker inspect --format '{{.Image}}' hivesync-backend").stdout.strip() == good
    dumps = server.exec("ls /var/backups/hivesync").stdout.split()
    assert dumps and all(d.endswith(".dump") for d in dumps)
    assert "preview_priorities" not in tables(server)
    assert server.exec("docker exec hivesync-postgres psql -U hivesync -d hivesync -Atc "
                       "'select count(*) from users'").stdout.strip() == users
    assert https(test_cluster, server, "/api/health").json()["ok"] is True
    again = deploy(SERVER, data)
    assert again.changed == [], again.changed


# ----------------------------------------------------------------------------- source changes


def test_a_source_change_rebuilds_under_a_new_tag_and_a_ref_goes_back_without_a_build(server, checkout, data,
                                                                                      test_cluster):  # noqa: F811
    """A new commit: a new content tag built on the host, the old image kept; then the
    first commit by ref: its image is still there, so nothing is built."""
    first, [old_tag] = git(checkout, "rev-parse", "HEAD"), backend_tags(server)
    (checkout / "backend/app/REVISION").write_text("sample source revision 2\n")
    git(checkout, "commit", "-qam", "revision 2")
    second = git(checkout, "rev-parse", "HEAD")
    run = deploy(SERVER, data)
    assert run.did(f"Backend image built on the host from {second}"), run.changed
    tags = backend_tags(server)
    assert len(tags) == 2 and old_tag in tags
    assert running_image(server) != f"hivesync-backend:{old_tag}"
    assert server.exec("docker exec hivesync-backend cat /app/backend/app/REVISION").stdout == "sample source revision 2\n"
    assert deployed(server)["commit"] == second
    assert https(test_cluster, server, "/api/health").json()["ok"] is True
    back = deploy(SERVER, {**data, "hivesync_backend_ref": first})
    assert not [n for n in back.changed if "Backend image built" in n], back.changed
    assert running_image(server) == f"hivesync-backend:{old_tag}"
    assert deployed(server)["commit"] == first and deployed(server)["ref"] == first


def history(server) -> list[dict]:
    return [json.loads(line) for line in server.exec("cat /opt/hivesync/releases/history.jsonl").stdout.splitlines()]


def test_rollback_puts_the_previous_release_back_and_the_history_shows_it(server, checkout, data,
                                                                           test_cluster):  # noqa: F811
    """`make releases` / `make rollback DEPLOY=hivesync` (release_action): after the two
    source releases above (the first one live again), the rollback goes back to the one
    before it, the second: its image, health green, a `rollback` line; the same rollback
    pinned by TO= then changes nothing, also when TO= is not the checkout's HEAD."""
    first, second = git(checkout, "rev-parse", "HEAD~1"), git(checkout, "rev-parse", "HEAD")
    live = running_image(server)
    assert deployed(server)["commit"] == first
    listed = deploy(SERVER, {**data, "release_action": "releases"})
    assert listed.changed == [], listed.changed
    entries = {e["commit"]: e for e in history(server) if e.get("commit")}
    assert set(entries) == {first, second}
    assert f"* {entries[first]['id']}" in listed.output and f"  {entries[second]['id']}" in listed.output, \
        listed.output[-3000:]
    back = deploy(SERVER, {**data, "release_action": "rollback"})
    assert back.did("Compose stack hivesync (backend, postgres, redis)"), back.changed
    assert running_image(server) == entries[second]["image"] != live
    assert server.exec("docker exec hivesync-backend cat /app/backend/app/REVISION").stdout == "sample source revision 2\n"
    assert deployed(server)["commit"] == second
    assert https(test_cluster, server, "/api/health").json()["ok"] is True
    last = history(server)[-1]
    assert last["action"] == "rollback" and last["id"] == entries[second]["id"] and last["from"] == entries[first]["id"]
    assert server.exec("readlink /opt/hivesync/backend").stdout.strip() == f"releases/backend/{last['components']['backend']}"
    again = deploy(SERVER, {**data, "release_action": "rollback", "release_to": entries[second]["id"]})
    assert again.changed == [], again.changed
    # TO= a release that is not the checkout's HEAD (the usual case): switched once, then
    # the same pinned rollback changes nothing (no second dump, no recreate)
    older = deploy(SERVER, {**data, "release_action": "rollback", "release_to": entries[first]["id"]})
    assert running_image(server) == entries[first]["image"] and deployed(server)["commit"] == first
    assert https(test_cluster, server, "/api/health").json()["ok"] is True
    assert [e["id"] for e in history(server)[-2:]] == [entries[second]["id"], entries[first]["id"]], older.output[-2000:]
    pinned = deploy(SERVER, {**data, "release_action": "rollback", "release_to": entries[first]["id"]})
    assert pinned.changed == [], pinned.changed
    # a plain apply goes back to the checkout's release, says it undoes the rollback, and
    # its history line names the dump taken before it
    forward = deploy(SERVER, data)
    assert f"warning: release {entries[first]['id']} was put back by a rollback" in forward.output, forward.output[-3000:]
    assert running_image(server) == entries[second]["image"]
    dump = history(server)[-1]["backup"]
    assert dump.startswith("/var/backups/hivesync/hivesync-") and server.exec(f"test -s {dump}", check=False).returncode == 0


# ----------------------------------------------------------------------------- Debian 12


SERVER12 = "hivesync-12"


@pytest.fixture(scope="class")
def server12(request, test_cluster, images):  # noqa: F811
    """A second Linode stand-in on Debian 12, for this class only (then removed): the
    domain's record moves to it (the Debian 13 server's tests are done)."""
    return linode(request, test_cluster, images, SERVER12, "debian12")


@pytest.fixture(scope="class")
def data12(images, server12, test_cluster, checkout):  # noqa: F811
    return server_data(images, server12, test_cluster, checkout)


@pytest.fixture(scope="class")
def first_run12(server12, data12):
    return deploy(SERVER12, data12)


class TestServerOnDebian12:
    """The server role's core on Debian 12 (the full set runs on Debian 13 above): a fresh
    apply, a second with 0 changes, units and containers, HTTPS through nginx, the ports
    seen from a second host."""

    def test_fresh_apply_then_a_second_changes_nothing(self, server12, data12, first_run12):
        assert server12.exec(". /etc/os-release; echo $VERSION_ID").stdout.strip() == "12"
        assert first_run12.did("Compose stack hivesync (backend, postgres, redis)"), first_run12.changed
        second = deploy(SERVER12, data12)
        assert second.changed == [], second.changed

    def test_units_and_containers(self, server12, first_run12):
        testinfra = server12.testinfra()
        for unit in ("docker", "nginx"):
            service = testinfra.service(unit)
            assert service.is_running and service.is_enabled, unit
        states = server12.exec("docker ps -a --filter label=com.docker.compose.project=hivesync "
                               "--format '{{.Names}} {{.Status}}'").stdout.splitlines()
        assert sorted(line.split(" ", 1)[0] for line in states) == ["hivesync-backend", "hivesync-postgres",
                                                                      "hivesync-redis"], states
        assert all("Up " in line and "(healthy)" in line for line in states), states
        [tag] = backend_tags(server12)
        assert running_image(server12) == f"hivesync-backend:{tag}" and tag.startswith("src-")

    def test_https_health_and_the_ports_from_a_second_host(self, server12, workstation, test_cluster, first_run12):  # noqa: F811
        health = https(test_cluster, server12, "/api/health")
        assert health.status_code == 200 and health.json()["ok"] is True
        assert https(test_cluster, server12, "/docs").status_code == 404
        assert sorted(open_tcp_ports(workstation, server12.address)) == [22, 80, 443]
        sockets = parse_ss(server12.exec("ss -H -tulnp").stdout.splitlines())
        for port in (4000, 5432, 6379):
            assert is_loopback_only(sockets, port, "tcp"), [s for s in sockets if s["port"] == port]
