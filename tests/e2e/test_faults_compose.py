"""Fault tests for a compose system (issue 15, item 6): pyinfra SIGKILLed at seeded,
printed operations of a first ingestor deploy and of an upgrade (a source change).

Each kill is followed by a re-run that must converge (healthy, at head) and a second
re-run with 0 changes; the SQLite rows (a checksum of data-api's metadata.db) are what
they were. A kill can land inside the release (a transient systemd unit, which goes on
without pyinfra): the re-run waits for it before it touches the files it reads. One kill
point per case in CI (each costs a full converge), more with `INFRA_FAULT_POINTS=<n>`;
`INFRA_FAULT_SEED=<n>` repeats a run. On the stand-ins of
tests/apps/ingestor (see tests/e2e/test_ingestor.py), every run bounded in time.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.apps.ingestor.build import SOURCE, ensure_standin_images
from tests.e2e.faults import fault_points, kill_points, planned_operations, run_until_operation
from tests.e2e.runner import apply
from tests.e2e.test_ingestor import ENV, VOLUME, health, ingestor_data, prepare_host
from tests.harness.fixtures import module_host

pytestmark = pytest.mark.e2e

HOST = "ingestor-faults"
DEPLOY = "deploys/ingestor.py"
POINTS = fault_points(1)  # each point costs a full converge
ROWS = r"""
import hashlib, json, sqlite3, subprocess, sys
base = subprocess.run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", sys.argv[1]],
                      capture_output=True, text=True, check=True).stdout.strip()
c = sqlite3.connect("file:" + base + "/metadata.db?mode=ro", uri=True)
rows = {t: sorted(map(repr, c.execute('select * from "%s"' % t))) for t in ("devices", "entities", "alembic_version")}
print(hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest(), sum(map(len, rows.values())))
"""
RESET = ("cd /opt/ha-ingestor && docker compose -p ha-ingestor --project-directory src -f compose/docker-compose.yml "
         "-f compose/docker-compose.override.yml --env-file env/compose.env down -v --remove-orphans && cd / && "
         "rm -rf /opt/ha-ingestor /var/backups/ha-ingestor")


@pytest.fixture(scope="module")
def host(request, test_cluster):
    images = ensure_standin_images()
    return prepare_host(module_host(request, test_cluster, HOST, groups=["ingestor", "docker_host"], docker=True),
                        images)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("ingestor-faults") / "ha-ingestor"
    shutil.copytree(SOURCE, path)
    return path


def rows(host) -> tuple[str, int]:
    digest, count = host.exec(["python3", "-c", ROWS, VOLUME]).stdout.split()
    return digest, int(count)


def add_rows(host) -> None:
    """Data a deploy must keep: a device and an entity written as the app would."""
    base = host.exec(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {VOLUME}").stdout.strip()
    host.exec(["python3", "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
               "c.execute(\"insert or ignore into devices (device_id, name) values ('fault-probe', 'Probe')\"); "
               "c.commit()", f"{base}/metadata.db"])


def data(source) -> dict:
    return ingestor_data(None, source)


def converges(host, source) -> tuple[str, int]:
    """The re-run succeeds, the one after it changes nothing, every service is healthy;
    the rows as the second re-run left them."""
    apply(DEPLOY, limit=HOST, env=ENV, data=data(source))
    after = rows(host)
    second = apply(DEPLOY, limit=HOST, env=ENV, data=data(source))
    assert second.changed == [], f"second re-run changed {second.changed}"
    assert rows(host) == after
    assert health(host, 8006)["dependencies"]["sqlite"]["status"] == "healthy"
    assert health(host, 8001)["subscription"]["is_subscribed"] is True
    assert host.exec("test -e /opt/ha-ingestor/.release-pending", check=False).returncode != 0
    return after


def kill_at(point: int, source) -> None:
    killed = run_until_operation(DEPLOY, point, limit=HOST, env=ENV, data=data(source), timeout=900)
    assert killed.killed, f"operation {point} never started:\n{killed.output[-2000:]}"
    print(f"[faults] killed at operation {point}: {killed.operation}")


def test_killed_first_deploy_converges(host, source):
    total = planned_operations(DEPLOY, limit=HOST, env=ENV, data=data(source))
    for i, point in enumerate(kill_points(total, POINTS)):
        if i:
            host.exec(RESET, timeout=300)  # a first deploy again (the built images stay cached)
        kill_at(point, source)
        digest, count = converges(host, source)
        assert count >= 1  # alembic_version: the schema is at head


def test_killed_upgrade_converges_and_keeps_the_rows(host, source):
    """Each kill point cuts a fresh upgrade: enrichment-pipeline's source changes, so the
    release rebuilds it (backup after the build, health-gated switch)."""
    apply(DEPLOY, limit=HOST, env=ENV, data=data(source))
    add_rows(host)
    before = rows(host)
    main = source / "services/enrichment-pipeline/src/main.py"
    points = None
    for n in range(1, POINTS + 1):
        main.write_text(main.read_text() + f"# upgrade {n}\n")
        points = points or kill_points(planned_operations(DEPLOY, limit=HOST, env=ENV, data=data(source)), POINTS)
        kill_at(points[n - 1], source)
        assert converges(host, source) == before, "the upgrade changed data-api's rows"
    label = json.loads(host.exec("docker image inspect -f '{{json .Config.Labels}}' "
                                 "ha-ingestor-enrichment-pipeline:latest").stdout)["ingestor.source"]
    assert label == json.loads(host.exec("cat /opt/ha-ingestor/release.json").stdout)["services"][
        "enrichment-pipeline"]["source_digest"]
