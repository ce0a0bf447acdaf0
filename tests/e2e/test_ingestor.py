"""deploys/ingestor.py on a disposable Docker host (compose v2), with the stand-ins of
tests/apps/ingestor (derived from wtthornton/ha-ingestor bbc4ab4): a sample checkout with
upstream's own compose file, env templates and Dockerfiles built on the host (their base
tags are the local stand-in base), an InfluxDB stand-in tagged influxdb:2.7, and a Home
Assistant stand-in on the host itself.

Tests run in order and share the host: preflight refusals (nothing changes), fresh
install (migration before data-api starts), second apply with 0 changes, upstream's
container names / health JSON / dashboard proxies, loopback ports, tables at head, env
files from the templates, a source change and a moved base image rebuilding only what
they touch (one release; backup after the build), verified backups, `make
ingestor-restore` (data and env files), a wrong secret rolled back with the env files, a
release cut off with its SSH session finished by the next apply, the status command, and
last taking over a stack started by hand in the checkout (its failed first release rolled
back to it with images, data and its own edited compose and env files; then create_all's
database stamped, rows and the unmanaged service kept).
"""

from __future__ import annotations

import json
import os
import re
import runpy
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deploys.settings import cli_data_value
from facts.sockets import is_loopback_only, parse_ss
from tests.apps.ingestor.build import HA_STANDIN, SOURCE, UPSTREAM_BASES, UPSTREAM_INFLUXDB, ensure_standin_images
from tests.e2e.runner import apply, pyinfra
from tests.harness.fixtures import module_host, test_cluster, test_cluster_hosts  # noqa: F401

pytestmark = pytest.mark.e2e

HOST = "ingestor-1"
REPO = Path(__file__).resolve().parents[2]
HA_TOKEN = "ha-" + secrets.token_hex(16)
ENV = {"HOME_ASSISTANT_TOKEN": HA_TOKEN, "INFLUXDB_TOKEN": "influx-" + secrets.token_hex(16),
       "INFLUXDB_PASSWORD": "pw-" + secrets.token_hex(12)}
PORTS = {"websocket-ingestion": 8001, "enrichment-pipeline": 8002, "admin-api": 8003, "sports-data": 8005,
         "data-api": 8006, "influxdb": 8086, "data-retention": 8080, "health-dashboard": 3000}
BUILT = ("websocket-ingestion", "enrichment-pipeline", "admin-api", "data-api", "data-retention", "sports-data",
         "health-dashboard")
RUNS: dict[str, object] = {}

SQLITE = r"""
import json, sqlite3, subprocess, sys
base = subprocess.run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", sys.argv[1]],
                      capture_output=True, text=True, check=True).stdout.strip()
path = sys.argv[3] if len(sys.argv) > 3 else base + "/" + sys.argv[2]
c = sqlite3.connect(path)
tables = sorted(r[0] for r in c.execute("select name from sqlite_master where type='table'"))
counts = {t: c.execute('select count(*) from "%s"' % t).fetchone()[0] for t in tables}
print(json.dumps({"tables": tables, "counts": counts, "journal_mode": c.execute("pragma journal_mode").fetchone()[0]}))
"""


@pytest.fixture(scope="module")
def images():
    return ensure_standin_images()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A copy of the sample checkout the tests can change."""
    path = tmp_path_factory.mktemp("ingestor") / "ha-ingestor"
    shutil.copytree(SOURCE, path)
    return path


@pytest.fixture(scope="module")
def host(request, test_cluster, images):  # noqa: F811
    return prepare_host(module_host(request, test_cluster, HOST, groups=["ingestor", "docker_host"], docker=True),
                        images)


def prepare_host(h, images):
    """The stand-in images loaded (upstream's FROM tags and influxdb:2.7 on them) and the
    Home Assistant stand-in running on the host (also used by test_faults_compose.py)."""
    for tag in images.values():
        h.load_image(tag)
    for alias in UPSTREAM_BASES:  # upstream's FROM lines build from the local stand-in base
        h.exec(["docker", "tag", images["base"], alias])
    h.exec(["docker", "tag", images["influxdb"], UPSTREAM_INFLUXDB])
    h.write_file("/opt/ha-standin/home_assistant.py", HA_STANDIN.read_text())
    h.exec(["systemd-run", "--unit=ha-standin", f"--setenv=HA_TOKEN={HA_TOKEN}", "python3",
            "/opt/ha-standin/home_assistant.py"])
    h.exec("for i in $(seq 50); do python3 -c \"import urllib.request as u; u.urlopen('http://172.17.0.1:8123/api/')\" "
           "2>&1 | grep -q 401 && exit 0; sleep 0.2; done; exit 1")
    return h


def ingestor_data(images, source, **extra) -> dict:
    return {
        "ingestor_source": str(source),
        "home_assistant_url": "http://172.17.0.1:8123",
        "ingestor_healthcheck_timing": {"interval": "1s", "timeout": "5s", "retries": 3, "start_period": "2s"},
        "ingestor_health_timeout_s": 60,
        **extra,
    }


def deploy(source_data, env=ENV, check=True):
    return (apply if check else pyinfra)("deploys/ingestor.py", limit=HOST, env=env, data=source_data)


def release_log(host, run) -> str:
    """The release script's log lines written during `run` (pyinfra --json shows no stdout)."""
    text = host.exec("cat /opt/ha-ingestor/release.log 2>/dev/null || true").stdout
    new = text[RUNS.get("log_size", 0):]
    RUNS["log_size"] = len(text)
    return new + run.output


def health(host, port, path="/health"):
    out = host.exec(["python3", "-c", "import sys, urllib.request as u; print(u.urlopen(sys.argv[1]).read().decode())",
                     f"http://127.0.0.1:{port}{path}"]).stdout
    return json.loads(out)


def sqlite(host, volume, name, path=None) -> dict:
    return json.loads(host.exec(["python3", "-c", SQLITE, volume, name, *([path] if path else [])]).stdout)


REVISION = r"""
import sqlite3, subprocess, sys
base = subprocess.run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", sys.argv[1]],
                      capture_output=True, text=True, check=True).stdout.strip()
print(sqlite3.connect(base + "/metadata.db").execute("select version_num from alembic_version").fetchone()[0])
"""


def image_ids(host) -> dict[str, str]:
    return {s: host.exec(f"docker image inspect -f '{{{{.Id}}}}' ha-ingestor-{s}:latest").stdout.strip() for s in BUILT}


RELEASE = "Release ha-ingestor (8 managed services, only when changed)"
VOLUME = "ha-ingestor_sqlite-data"


def test_preflight_stops_before_any_change(host, images, source):
    """Token rejected (and shorter than upstream's websocket-ingestion accepts), too little
    disk, Docker too old: one message, nothing changed."""
    run = deploy(ingestor_data(images, source, preflight_min_disk_mb=10**9, ingestor_docker_min_version="99"),
                 env={**ENV, "HOME_ASSISTANT_TOKEN": "wrong-token"}, check=False)
    assert run.returncode != 0
    for part in ("rejected HOME_ASSISTANT_TOKEN (HTTP 401)", "MiB free on /", "Docker 20.10.24 is older than 99",
                 "HOME_ASSISTANT_TOKEN is 11 characters, shorter than 32: websocket-ingestion refuses it"):
        assert part in run.output, run.output[-3000:]
    assert "wrong-token" not in run.output
    assert host.exec("test -e /opt/ha-ingestor", check=False).returncode != 0


def test_first_apply_migrates_before_data_api_starts(host, images, source):
    """Fresh install from upstream's own compose file + our override."""
    run = deploy(ingestor_data(images, source))
    RUNS["first"] = run
    assert run.did(RELEASE), run.changed
    log = release_log(host, run)
    assert "nothing to back up (first install)" in log
    assert "migrating data-api: (empty) -> 002 (alembic upgrade head)" in log, log
    assert "not managed by this deploy (left as they are): carbon-intensity (not created)" in log, log
    starts = [log.index(f"starting {first}") for first in ("influxdb", "enrichment-pipeline", "websocket-ingestion",
                                                           "admin-api", "health-dashboard")]
    assert starts == sorted(starts)
    assert log.index("schema at head 002") < log.index("starting enrichment-pipeline, data-api")


def test_second_apply_changes_nothing(host, images, source):
    run = deploy(ingestor_data(images, source))
    assert run.changed == [], run.changed


def test_upstream_names_health_json_and_the_dashboard_proxies(host):
    names = host.exec("docker ps --format '{{.Names}}'").stdout.split()
    assert {"ha-ingestor-influxdb", "ha-ingestor-websocket", "ha-ingestor-enrichment", "ha-ingestor-admin",
            "ha-ingestor-data-api", "ha-ingestor-data-retention", "ha-ingestor-sports-data",
            "ha-ingestor-dashboard"} <= set(names), names
    data_api = health(host, 8006)
    assert data_api["status"] == "healthy" and data_api["dependencies"]["influxdb"]["status"] == "connected"
    assert data_api["dependencies"]["sqlite"]["journal_mode"] == "wal"
    assert health(host, 8001)["subscription"]["is_subscribed"] is True
    assert health(host, 8003)["service"] == "admin-api"  # API_PORT 8004 behind host 8003
    assert health(host, 8086)["status"] == "pass"
    # nginx in the dashboard reaches data-api and admin-api by upstream's container names
    assert health(host, 3000, "/api/devices")["count"] == 0
    assert health(host, 3000, "/api/v1/health")["status"] == "healthy"
    assert "home_assistant_events" in host.exec("docker exec ha-ingestor-influxdb influx bucket list").stdout


def test_every_published_port_is_loopback_only(host):
    sockets = parse_ss(host.exec("ss -H -tulnp").stdout.splitlines())
    for service, port in PORTS.items():
        assert is_loopback_only(sockets, port, "tcp"), (service, [s for s in sockets if s["port"] == port])


def test_tables_at_head(host):
    db = sqlite(host, VOLUME, "metadata.db")
    assert {"alembic_version", "devices", "entities"} <= set(db["tables"])
    assert db["journal_mode"] == "wal"
    rev = host.exec(["python3", "-c", REVISION, VOLUME]).stdout.strip()
    assert rev == "002"


def test_env_files_from_upstreams_templates_root_only(host):
    output = RUNS["first"].output
    for value in ENV.values():
        assert value not in output
    t = host.testinfra()
    for path in ("src/infrastructure/.env.websocket", "src/infrastructure/.env.weather",
                 "src/infrastructure/.env.influxdb", "env/compose.env"):
        f = t.file(f"/opt/ha-ingestor/{path}")
        assert f.mode == 0o600 and f.user == "root", path
    websocket = t.file("/opt/ha-ingestor/src/infrastructure/.env.websocket").content_string
    assert f"HA_TOKEN={HA_TOKEN}" in websocket and "HA_URL=ws://172.17.0.1:8123/api/websocket" in websocket
    assert "HA_RECONNECT_DELAY=5" in websocket  # the template's other lines are kept
    assert f"INFLUXDB_TOKEN={ENV['INFLUXDB_TOKEN']}" in t.file("/opt/ha-ingestor/src/infrastructure/.env.influxdb").content_string
    for path in ("compose/docker-compose.yml", "compose/docker-compose.override.yml"):
        for value in ENV.values():
            assert value not in t.file(f"/opt/ha-ingestor/{path}").content_string


def test_a_source_change_and_a_moved_base_image_rebuild_only_what_they_touch(host, images, source):
    """One release for both (they converge the same host): enrichment-pipeline's source
    changed, and `FROM python:3.11-alpine` now resolves to another image on the host (point
    10, a pull of a newer one), so data-api and sports-data are rebuilt on it; nothing
    else. The backup is taken after the build, just before the switch; the next apply has
    nothing to do (the new base is recorded)."""
    before = RUNS["images_1"] = image_ids(host)
    main = source / "services/enrichment-pipeline/src/main.py"
    main.write_text(main.read_text() + "# release 2\n")
    host.exec("printf 'FROM python:3.11-alpine\\nLABEL infra-test.base=moved\\n' | "
              "docker build -q -t python:3.11-alpine -")
    run = deploy(ingestor_data(images, source))
    log = release_log(host, run)
    assert "data-api: base image changed since its build (python:3.11-alpine)" in log, log
    assert "building data-api, enrichment-pipeline, sports-data\n" in log, log
    after = RUNS["images_2"] = image_ids(host)
    assert [s for s in BUILT if before[s] != after[s]] == ["enrichment-pipeline", "data-api", "sports-data"]
    assert "backup verified" in log and "database at head 002: no migration" in log
    assert log.index("building data-api") < log.index("backup verified")  # backup just before the switch
    assert deploy(ingestor_data(images, source)).changed == []


LISTED = re.compile(r"^.*? ([* ]) ([0-9a-f]{12})  \S+  (\w+)\s+commit ", re.M)


def listed(host, images, source, data=None) -> list[tuple[str, str, str]]:
    """`make releases DEPLOY=ingestor`: (live mark, id, action), newest first."""
    run = deploy({**(data or ingestor_data(images, source)), "release_action": "releases"})
    assert run.changed == [] and "ha-ingestor releases (newest first; * = live " in run.output, run.output[-3000:]
    return LISTED.findall(run.output)


PENDING = "/opt/ha-ingestor/releases/stack/0123456789ab"


def running_image(host, container: str) -> str:
    return host.exec(f"docker inspect -f '{{{{.Image}}}}' {container}").stdout.strip()


def history(host) -> list[dict]:
    return [json.loads(line) for line in host.exec("cat /opt/ha-ingestor/releases/history.jsonl").stdout.splitlines()]


def test_releases_are_listed_and_a_rollback_brings_the_previous_one_back(host, images, source):
    """Issue 15 item 5, after the two releases above: `make rollback` puts the first
    release's images (`:rel-<id>`), compose and env files and the SQLite data backed up
    while it was live back, health-gated, as the transient unit ingestor-release, with a
    history line (action rollback); `make releases` lists both, the live one marked. The
    next apply with the checkout as it is releases it again (the Makefile's "back to the
    previous release": the checkout stays the operator's truth): the kept release, same
    id, its images rebuilt from the build cache; with ingestor_keep_releases=1 its release
    unit prunes the release left behind (record and `:rel-` tags), never the live one nor
    one built but never switched to; then 0 changes."""
    older, newer = (e["id"] for e in history(host)[-2:])
    assert [e["action"] for e in history(host)] == ["deploy", "deploy"]
    override = host.exec("cat /opt/ha-ingestor/compose/docker-compose.override.yml").stdout
    run = deploy(ingestor_data(images, source, release_action="rollback"))
    log = release_log(host, run)
    assert "rolled back to release" in log and "the data of " in log, log[-3000:]
    assert "restored metadata.db from /var/backups/ha-ingestor/ingestor-" in log, log[-3000:]
    unit = host.exec("journalctl -q -o cat -u ingestor-release.service").stdout
    assert "rolled back to release" in unit  # as the transient unit, as a release runs
    assert running_image(host, "ha-ingestor-enrichment") == RUNS["images_1"]["enrichment-pipeline"]
    assert running_image(host, "ha-ingestor-data-api") == RUNS["images_1"]["data-api"]
    assert host.exec("cat /opt/ha-ingestor/compose/docker-compose.override.yml").stdout != override
    assert health(host, 8002)["status"] == "healthy" and health(host, 8006)["status"] == "healthy"
    assert health(host, 8001)["subscription"]["is_subscribed"] is True
    assert host.exec("stat -c %a /opt/ha-ingestor/env/compose.env").stdout.strip() == "600"
    assert listed(host, images, source) == [("*", older, "rollback"), (" ", newer, "deploy")]
    # a release built but never switched to (a run cut off between its record and its switch)
    host.exec(f"mkdir -p {PENDING} && printf '{{\"id\": \"{PENDING[-12:]}\", \"built_at\": \"%s\"}}' "
              f"\"$(date +%Y-%m-%dT%H:%M:%S%z)\" > {PENDING}/release.json && touch {PENDING}/.complete")
    keep_one = ingestor_data(images, source, ingestor_keep_releases=1)
    forward = deploy(keep_one)
    assert forward.did(RELEASE), forward.changed
    assert running_image(host, "ha-ingestor-enrichment") == RUNS["images_2"]["enrichment-pipeline"]
    assert health(host, 8002)["status"] == "healthy"
    last = history(host)[-1]
    assert (last["id"], last["action"], last["from"]) == (newer, "deploy", older), last
    # the release unit pruned to ingestor_keep_releases=1: the release left behind and its
    # `:rel-` tags went; the live one and the one never switched to stay
    stack = {e["id"]: e["components"]["stack"] for e in history(host)}
    assert f"pruned stack releases {stack[older]} (keeping 1)" in release_log(host, forward)
    kept = host.exec("ls /opt/ha-ingestor/releases/stack").stdout.split()
    assert kept == sorted([stack[newer], PENDING[-12:]]), kept
    tags = host.exec("docker image ls --format '{{.Tag}}' | grep '^rel-' || true").stdout.split()
    assert f"rel-{stack[older]}" not in tags and f"rel-{stack[newer]}" in tags, tags
    assert listed(host, images, source, keep_one) == [("*", newer, "deploy"), (" ", older, "rollback")]
    assert deploy(keep_one).changed == []
    host.exec(f"rm -rf {PENDING}")


def test_backups_are_verified_and_restorable(host):
    newest = host.exec("ls -d /var/backups/ha-ingestor/ingestor-* | tail -1").stdout.strip()
    listing = host.exec(f"ls {newest} {newest}/influxdb").stdout.split()
    assert {"metadata.db", "backup.json"} <= set(listing)
    assert any(name.endswith(".manifest") for name in listing)
    assert host.exec(f"stat -c %a {newest}").stdout.strip() == "700"
    live = sqlite(host, VOLUME, "metadata.db")
    host.exec(f"rm -rf /tmp/restore && mkdir /tmp/restore && cp {newest}/metadata.db /tmp/restore/")
    restored = sqlite(host, VOLUME, "", "/tmp/restore/metadata.db")
    assert restored["counts"] == live["counts"] and {"devices", "entities", "alembic_version"} <= set(restored["tables"])
    host.exec(f"docker run --rm -v {newest}/influxdb:/backup:ro -e INFLUX_TOKEN={ENV['INFLUXDB_TOKEN']} "
              "influxdb:2.7 sh -c 'influx restore /backup && influx bucket list --name home_assistant_events'")


def test_make_ingestor_restore_puts_a_backup_back(host):
    """`make ingestor-restore BACKUP=...`: SQLite and InfluxDB as the backup has them."""
    newest = host.exec("ls -d /var/backups/ha-ingestor/ingestor-* | tail -1").stdout.strip()
    saved = sqlite(host, VOLUME, "", f"{newest}/metadata.db")["counts"]
    base = host.exec(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {VOLUME}").stdout.strip()
    host.exec(["python3", "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
               "c.execute(\"insert into devices (device_id, name) values ('after-backup', 'X')\"); c.commit()",
               f"{base}/metadata.db"])
    host.exec("docker exec ha-ingestor-influxdb sh -c 'echo after_backup value=1 >> /var/lib/influxdb2/home_assistant_events.lp'")
    env_file = "/opt/ha-ingestor/src/infrastructure/.env.influxdb"
    saved_env = host.exec(f"cat {newest}/release/files/*-.env.influxdb").stdout
    assert saved_env == host.exec(f"cat {env_file}").stdout and "INFLUXDB_TOKEN=" in saved_env
    host.exec(f"echo AFTER_BACKUP=1 >> {env_file} && chmod 644 {env_file}")
    proc = subprocess.run(["make", "-s", "ingestor-restore", f"BACKUP={newest}", "ENV=test", f"LIMIT={HOST}"], cwd=REPO,
                          env={**os.environ, **ENV}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert sqlite(host, VOLUME, "metadata.db")["counts"] == saved
    lines = host.exec("docker exec ha-ingestor-influxdb cat /var/lib/influxdb2/home_assistant_events.lp").stdout
    assert "after_backup" not in lines
    assert host.exec(f"cat {env_file}").stdout == saved_env  # the backup's env files, root-only
    assert host.exec(f"stat -c %a {env_file}").stdout.strip() == "600"
    restore_log = host.exec("cat /opt/ha-ingestor/release.log").stdout
    assert f"restored env files from {newest}: " in restore_log and ".env.influxdb" in restore_log, restore_log[-2000:]
    assert "restore done; every service healthy" in restore_log
    bad = subprocess.run(["make", "-s", "ingestor-restore", "BACKUP=/etc", "ENV=test", f"LIMIT={HOST}"], cwd=REPO,
                         env={**os.environ, **ENV}, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "is not a backup of this deploy" in bad.stdout + bad.stderr


ENV_FILES = ("/opt/ha-ingestor/src/infrastructure/.env.influxdb", "/opt/ha-ingestor/env/compose.env")


def test_a_wrong_influxdb_token_rolls_back_the_env_files_with_the_stack(host, images, source):
    """Point 7: a wrong INFLUXDB_TOKEN reaches the env files; InfluxDB keeps the token it
    was set up with and refuses it; the release fails naming the service, and the rollback
    puts the previous release's env files back with its stack: healthy again, and the
    next apply with the right secret has nothing to do."""
    before = {path: host.exec(f"cat {path}").stdout for path in ENV_FILES}
    wrong = "influx-wrong-" + secrets.token_hex(8)
    run = deploy(ingestor_data(images, source, ingestor_health_timeout_s=20),
                 env={**ENV, "INFLUXDB_TOKEN": wrong}, check=False)
    assert run.returncode != 0
    assert "influxdb: bucket home_assistant_events missing" in run.output and "ROLLED BACK" in run.output, \
        run.output[-4000:]
    assert wrong not in run.output
    log = release_log(host, run)
    assert "restored the previous release's compose and env files (deploy:" in log, log
    assert {path: host.exec(f"cat {path}").stdout for path in ENV_FILES} == before
    assert host.exec("stat -c %a " + " ".join(ENV_FILES)).stdout.split() == ["600", "600"]
    assert health(host, 8001)["subscription"]["is_subscribed"] is True
    assert "home_assistant_events" in host.exec("docker exec ha-ingestor-influxdb influx bucket list").stdout
    newest = host.exec("ls -d /var/backups/ha-ingestor/ingestor-* | tail -1").stdout.strip()
    assert host.exec(f"stat -c %a {newest}/release/files").stdout.strip() == "700"
    again = deploy(ingestor_data(images, source))  # the right secret: the env files already hold it
    # only the plan file, which records the failed run's ingestor_health_timeout_s
    assert not again.did(RELEASE) and again.changed == ["/opt/ha-ingestor/release.json"], again.changed


def test_a_release_cut_off_with_its_ssh_session_is_finished_by_the_next_apply(host, images, source):
    """The release runs as the transient unit ingestor-release.service: killing pyinfra (and
    its SSH session) mid-release leaves it running; the next apply waits for it, reports
    it, and releases once more (the unit was running, and the run's .release-pending mark
    is cleared only by a finished release), then nothing is left to do."""
    host.exec("touch /opt/ha-ingestor/.release-pending")  # something to release
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", "deploys/ingestor.py", "-y", "--limit", HOST]
    for key, value in ingestor_data(images, source).items():
        cmd += ["--data", f"{key}={cli_data_value(value)}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "DEPLOY_ENV": "test", "PYINFRA_PROGRESS": "off", **ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        host.exec("for i in $(seq 900); do systemctl is-active -q ingestor-release.service && exit 0; "
                  "sleep 0.2; done; exit 1", timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert host.exec("systemctl is-active ingestor-release.service").stdout.strip() == "active"
    run = deploy(ingestor_data(images, source))
    if run.did(RELEASE):  # the cut release was still going: this apply waited for it, then released
        notes = host.exec("journalctl -q -o cat -t host-step").stdout
        assert "an earlier run (an apply that was cut off) is still going: waiting for it" in notes, notes
        assert "the earlier run ended: success" in notes, notes
    # else it had finished on its own, under systemd, before this apply looked (a quiet machine):
    # only a finished release clears the mark, and then nothing is left to release
    assert host.exec("test -e /opt/ha-ingestor/.release-pending", check=False).returncode != 0
    assert deploy(ingestor_data(images, source)).changed == []
    assert health(host, 8003)["status"] == "healthy"
    assert host.exec("systemctl is-active ingestor-release.service", check=False).stdout.strip() != "active"


def test_status_reports_the_success_criteria(host):
    out = host.exec("/opt/ha-ingestor/bin/ingestor-release status /opt/ha-ingestor/release.json")
    assert "FAIL" not in out.stdout, out.stdout
    for line in ("OK   data-api: healthy", "OK   influxdb: bucket present",
                 "OK   metadata.db: tables alembic_version, devices, entities", "GET http://127.0.0.1:8006/api/devices: ",
                 "OK   sports-data: 0 ERROR/CRITICAL lines"):
        assert line in out.stdout, out.stdout


HAND = "/opt/ha-ingestor/src"  # the hand stack runs from the checkout where the deploy syncs it
HAND_FILES = (f"{HAND}/docker-compose.yml", f"{HAND}/.env", f"{HAND}/infrastructure/.env.websocket",
              f"{HAND}/docker-compose.override.yml")
# the operator's own override beside upstream's file (`docker compose up -d` reads both; not
# in the checkout, so the sync deletes it): quicker healthchecks than upstream's 30 s, which
# also keeps the hand stack's start and the rollback to it short
HAND_OVERRIDE = "services:\n" + "".join(f"  {s}:\n    healthcheck:\n      interval: 1s\n"
                                        for s in ("influxdb", "data-api", "carbon-intensity"))


def test_taking_over_a_hand_deployed_stack_keeps_its_data_and_other_services(host, images, source):
    """The plan's situation: the stack was started by hand from the checkout (`docker
    compose up -d` in <dir>/src, its compose file and an env file edited there, its own
    override beside it, every port on 0.0.0.0, one service the deploy does not manage).
    The first apply keeps the files it reads (`*.previous`) before the sync and its env
    files overwrite them, and records that stack as the previous release (those files, its
    images): a first release that fails goes back to it, files as they were. The next
    apply adopts its volumes and network, backs up and stamps the metadata.db that
    create_all made (rows kept), and leaves the other service running and connected. (The
    failed first release is also this module's proof that a broken release rolls back
    images and data.)"""
    ours = ("docker compose -p ha-ingestor --project-directory /opt/ha-ingestor/src "
            "-f /opt/ha-ingestor/compose/docker-compose.yml -f /opt/ha-ingestor/compose/docker-compose.override.yml "
            "--env-file /opt/ha-ingestor/env/compose.env")
    host.exec(f"{ours} down -v --remove-orphans && mv {HAND} /root/hand-src && "
              f"rm -rf /opt/ha-ingestor /var/backups/ha-ingestor && mkdir /opt/ha-ingestor && mv /root/hand-src {HAND}")
    RUNS["log_size"] = 0  # release.log starts again
    host.write_file(f"{HAND}/.env", "".join(f"{k}={v}\n" for k, v in {
        "HOME_ASSISTANT_URL": "http://172.17.0.1:8123", "HOME_ASSISTANT_TOKEN": HA_TOKEN,
        "INFLUXDB_TOKEN": ENV["INFLUXDB_TOKEN"], "INFLUXDB_PASSWORD": ENV["INFLUXDB_PASSWORD"]}.items()))
    host.write_file(f"{HAND}/docker-compose.override.yml", HAND_OVERRIDE)
    host.exec(f"echo '# edited on this host' >> {HAND}/docker-compose.yml && "
              f"echo HAND_EDITED=1 >> {HAND}/infrastructure/.env.websocket")
    host.exec(f"cd {HAND} && docker compose up -d --wait data-api carbon-intensity", timeout=900)
    base = host.exec(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {VOLUME}").stdout.strip()
    host.exec(["python3", "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
               "c.execute(\"insert into devices (device_id, name) values ('by-hand', 'Hand')\"); c.commit()",
               f"{base}/metadata.db"])
    network = host.exec("docker network inspect -f '{{.Id}}' ha-ingestor_ha-ingestor-network").stdout.strip()
    hand = {path: host.exec(f"cat {path}").stdout for path in HAND_FILES}
    before = image_ids(host)
    # a first release that fails (sports-data never turns healthy) goes back to the hand stack
    (source / "services/sports-data/src/HEALTH").write_text("broken\n")
    try:  # (the rollback waits ingestor_rollback_health_timeout_s: upstream's 30 s healthchecks)
        failed = deploy(ingestor_data(images, source, ingestor_health_timeout_s=20), check=False)
    finally:
        (source / "services/sports-data/src/HEALTH").unlink()
    log = release_log(host, failed)
    assert failed.returncode != 0 and "sports-data: " in failed.output and "ROLLED BACK" in failed.output, \
        failed.output[-4000:]
    assert f"recorded the running stack as the previous release: {HAND}" in log, log
    # (every image is rebuilt: the hand stack's host has no record of their base images)
    assert re.search(r"building [^\n]*sports-data", log) and "restored metadata.db" in log, log
    # the rollback re-tagged the image the hand stack ran (a service it did not run is
    # stopped, its new image left: the next release rebuilds it, the label differs)
    assert image_ids(host)["data-api"] == before["data-api"]
    assert f"restored the previous release's compose and env files (running stack in {HAND}" in log, log
    labels = host.exec("docker inspect -f '{{index .Config.Labels \"com.docker.compose.project.config_files\"}}' "
                       "ha-ingestor-data-api").stdout.strip()
    assert labels == f"{HAND}/docker-compose.yml,{HAND}/docker-compose.override.yml", labels
    # the hand stack's own files again: its edited compose file (the sync had put the
    # checkout's over it), its override (the sync had deleted it) and the env file the
    # deploy had rewritten (all kept as `.previous` before the sync)
    assert {path: host.exec(f"cat {path}").stdout for path in HAND_FILES} == hand
    assert sqlite(host, VOLUME, "metadata.db")["counts"]["devices"] == 1
    assert host.exec("docker inspect -f '{{.State.Status}}' ha-ingestor-sports-data").stdout.strip() != "running"
    run = deploy(ingestor_data(images, source))
    log = release_log(host, run)
    assert "not managed by this deploy (left as they are): carbon-intensity (running)" in log, log
    assert "backup verified" in log and "alembic stamp head" in log, log
    assert "recorded the running stack" not in log  # recorded once, by the failed release
    newest = host.exec("ls -d /var/backups/ha-ingestor/ingestor-* | tail -1").stdout.strip()
    saved = sqlite(host, VOLUME, "", f"{newest}/metadata.db")
    assert saved["counts"]["devices"] == 1
    assert f"running stack in {HAND}" in host.exec(f"cat {newest}/release/release.json").stdout
    assert "HAND_EDITED" not in host.exec(f"cat {HAND_FILES[2]}").stdout  # ours now; the kept copies are gone
    for path in HAND_FILES:
        assert host.exec(f"test -e {path}.previous", check=False).returncode != 0, path
    assert sqlite(host, VOLUME, "metadata.db")["counts"]["devices"] == 1
    assert host.exec("docker network inspect -f '{{.Id}}' ha-ingestor_ha-ingestor-network").stdout.strip() == network
    carbon = host.exec("docker inspect -f '{{.State.Status}}' ha-ingestor-carbon-intensity").stdout.strip()
    assert carbon == "running"
    assert json.loads(host.exec("curl -s http://127.0.0.1:8010/health").stdout)["influxdb"] == "pass"
    sockets = parse_ss(host.exec("ss -H -tulnp").stdout.splitlines())
    for service, port in PORTS.items():
        assert is_loopback_only(sockets, port, "tcp"), service
    assert deploy(ingestor_data(images, source)).changed == []


@pytest.mark.skipif(not os.environ.get("INGESTOR_E2E_V1"), reason="compose v1 host: set INGESTOR_E2E_V1=1 (boots a second Docker host)")
def test_compose_v1_host_is_refused(request, test_cluster, images, source):  # noqa: F811
    """Debian 12's docker-compose 1.29 appends an override's ports to upstream's (0.0.0.0):
    refused before any change, naming the fix."""
    v1 = module_host(request, test_cluster, "ingestor-v1", groups=["ingestor", "docker_host"], docker="v1")
    v1.write_file("/opt/ha-standin/home_assistant.py", HA_STANDIN.read_text())
    v1.exec(["systemd-run", "--unit=ha-standin", f"--setenv=HA_TOKEN={HA_TOKEN}", "python3",
             "/opt/ha-standin/home_assistant.py"])
    run = pyinfra("deploys/ingestor.py", limit="ingestor-v1", env=ENV, data=ingestor_data(images, source))
    assert run.returncode != 0 and "compose v1 (docker-compose) appends an override's ports" in run.output
    assert v1.exec("test -e /opt/ha-ingestor", check=False).returncode != 0
