"""Archon's images as a release series (deploys/archon.py + deploys/parts/compose_releases.py):
the images fact, the release id, what changes, the host-side record run for real in a temp
dir (a stand-in `docker` that knows the containers' images) read back with the Releases
fact's own script, the database a rollback takes back, the rollback and backup scripts."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from deploys import archon, settings
from deploys.errors import ConfigError
from deploys.parts import compose
from deploys.parts import compose_releases as cr
from deploys.parts import release_records
from deploys.parts.releases import app_id, rollback_target
from tests.unit.release_state import fake_docker_root, releases_state
from tests.unit.test_archon_deploy import data

# docker inspect --format '{{.Image}}' CONTAINER: the ids in $CONTAINERS ("container=id ...")
FAKE_DOCKER = """#!/bin/sh
[ "$1" = inspect ] || exit 2
eval "last=\\${$#}"
for pair in $CONTAINERS; do
  [ "$last" = "${pair%%=*}" ] && { echo "${pair#*=}"; exit 0; }
done
exit 1
"""
CONTAINERS = {"postgres": "archon-postgres", "archon-server": "archon-server"}


# docker for the images fact: `container inspect` knows $CONTAINERS ("name|project|running|id|image ..."),
# `image inspect` $IMAGES ("name=id ..."); a missing one: an error, the others still printed
FAKE_DOCKER_INSPECT = """#!/bin/sh
echo "$*" >> "$DOCKER_LOG"
kind=$1; shift 4; rc=0  # KIND inspect --format FORMAT NAMES...
for arg; do
  found=
  if [ "$kind" = container ]; then
    for c in $CONTAINERS; do IFS='|' read -r n p r id image <<E
$c
E
      [ "$n" = "$arg" ] && { echo "/$n $p $r $id $image"; found=1; }
    done
  else
    for pair in $IMAGES; do [ "${pair%%=*}" = "$arg" ] && { echo "${pair#*=}"; found=1; }; done
  fi
  [ -n "$found" ] || { echo "Error: No such object: $arg" >&2; rc=1; }
done
exit $rc
"""


def images_fact(tmp_path, containers: str, images: str) -> tuple[dict, list[str]]:
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER_INSPECT)
    docker.chmod(0o755)
    command = cr.StackImages().command(
        project="archon-production", containers={**CONTAINERS, "kong": "archon-kong"},
        images={"postgres": "pg:17", "archon-server": "srv:2", "kong": "pg:17"})
    log = tmp_path / "log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "DOCKER_LOG": str(log),
           "CONTAINERS": containers, "IMAGES": images}
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, check=True).stdout
    return cr.StackImages().process(out.splitlines()), log.read_text().splitlines()


def test_the_images_fact_keeps_the_projects_running_containers_and_the_wanted_ids(tmp_path):
    """Two docker calls however many services (each docker CLI start costs ~70 ms)."""
    st, calls = images_fact(tmp_path, "archon-postgres|archon-production|true|sha256:aa|pg:17 "
                            "archon-server|archon-production|true|sha256:bb|srv:1 "
                            # another project's container of the same name is not ours; a stopped one not running
                            "archon-kong|old-archon|true|sha256:cc|kong:1", "pg:17=sha256:aa srv:2=sha256:dd")
    assert st == {"running": {"postgres": {"id": "sha256:aa", "name": "pg:17"},
                              "archon-server": {"id": "sha256:bb", "name": "srv:1"}},
                  "wanted": {"postgres": "sha256:aa", "archon-server": "sha256:dd", "kong": "sha256:aa"}}
    assert len(calls) == 2 and calls[1] == "image inspect --format {{.Id}} pg:17 srv:2"
    # an image not on the host yet: the others' ids still found (one call each then)
    st, calls = images_fact(tmp_path, "archon-postgres|archon-production|false|sha256:aa|pg:17", "pg:17=sha256:aa")
    assert st == {"running": {}, "wanted": {"postgres": "sha256:aa", "archon-server": None, "kong": "sha256:aa"}}
    assert len(calls) == 2 + 3
    assert cr.parse_stack_images(["images", "running postgres sha256:aa pg:17", "wanted archon-server", "noise"]) == \
        {"running": {"postgres": {"id": "sha256:aa", "name": "pg:17"}}, "wanted": {"archon-server": None}}


def test_a_changed_or_missing_image_is_a_change_and_the_id_digests_the_ids():
    st = {"running": {"postgres": {"id": "a", "name": "pg"}, "archon-server": {"id": "b", "name": "srv:1"}},
          "wanted": {"postgres": "a", "archon-server": "c"}}
    assert cr.changed_services(st, ["postgres", "archon-server"]) == ["archon-server"]
    assert cr.changed_services({**st, "wanted": {"postgres": "a"}}, ["postgres", "archon-server"]) == ["archon-server"]
    assert cr.changed_services({**st, "wanted": {"postgres": "a", "archon-server": "b"}}, ["postgres", "archon-server"]) == []
    assert cr.running_rid(st, ["postgres", "archon-server"]) == cr.images_rid({"postgres": "a", "archon-server": "b"})
    assert cr.wanted_rid(st, ["postgres", "archon-server"]) == cr.images_rid({"archon-server": "c", "postgres": "a"})
    assert cr.wanted_rid({**st, "wanted": {"postgres": "a"}}, ["postgres", "archon-server"]) is None
    assert cr.images_rid({"postgres": "a"}) != cr.images_rid({"postgres": "b"})


def test_the_backup_a_rollback_takes_back_is_the_one_taken_when_that_release_was_left():
    history = [{"id": "r1", "backup": None}, {"id": "r2", "backup": "/b/1"}, {"id": "r3", "backup": "/b/2"},
               {"id": "r1", "backup": "/b/3"}, {"id": "r3", "backup": "/b/4"}]
    assert cr.backup_when_left(history, "r1") == "/b/4"  # its last stay ended with /b/4
    assert cr.backup_when_left(history, "r2") == "/b/2"
    assert cr.backup_when_left(history, "r3") is None  # live
    assert cr.backup_when_left(history, "r9") is None


def test_a_plain_deploy_after_a_rollback_warns_with_the_pin_hint():
    rolled = [{"id": "a", "action": "deploy"}, {"id": "b", "action": "rollback", "at": "t"}]
    warning = cr.undone_rollback(rolled, "b", "c", "deploy", "(pin x)")
    assert warning == "release b was put back by a rollback at t; this deploy replaces it with c (pin x)"
    assert cr.undone_rollback(rolled, "b", "b", "deploy", "") is None
    assert cr.undone_rollback(rolled, "b", "c", "rollback", "") is None
    assert cr.undone_rollback(rolled[:1], "a", "c", "deploy", "") is None


def record(root, ids, action="deploy", backup=None):
    env = {**os.environ, "PATH": f"{root}/bin:{os.environ['PATH']}",
           "CONTAINERS": " ".join(f"{CONTAINERS[s]}={i}" for s, i in ids.items())}
    images = {s: f"{s}:{i}" for s, i in ids.items()}
    script = cr.record_images_script(str(root), archon.COMPONENT, CONTAINERS, images, {"by": "t", "commit": "c0ffee"},
                                     action, backup, keep=2).replace(release_records.LIB_DIR, str(release_records.SOURCE.parent))
    run = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    return run


def state(root):
    return releases_state(root, archon.COMPONENT)


@pytest.fixture
def root(tmp_path):
    return fake_docker_root(tmp_path, FAKE_DOCKER)


def test_the_record_is_the_running_images_and_a_rollback_target_finds_them(root):
    one, two = {"postgres": "sha256:p", "archon-server": "sha256:s1"}, {"postgres": "sha256:p", "archon-server": "sha256:s2"}
    assert record(root, one).returncode == 0
    run = record(root, two, backup="/root/backups/archon-release-1")
    assert run.returncode == 0 and "(deploy " in run.stdout, run.stderr
    st = state(root)
    r1, r2 = cr.images_rid(one), cr.images_rid(two)
    assert st["components"]["images"]["current"] == r2
    assert cr.is_recorded(st, "images", r2) and not cr.is_recorded(st, "images", r1)
    meta = st["components"]["images"]["releases"][r1]["meta"]
    assert meta["image_ids"] == one and meta["images"]["archon-server"] == "archon-server:sha256:s1" and meta["by"] == "t"
    last = st["history"][-1]
    assert last["backup"] == "/root/backups/archon-release-1" and last["from"] == app_id({"images": r1})
    assert rollback_target(st, ["images"], None)["id"] == app_id({"images": r1})
    # the same images again: nothing recorded twice
    again = record(root, two)
    assert again.returncode == 0 and "(deploy" not in again.stdout and len(state(root)["history"]) == 2
    # keep=2: a third release prunes the first one's record
    assert record(root, {"postgres": "sha256:p", "archon-server": "sha256:s3"}).returncode == 0
    assert sorted(state(root)["components"]["images"]["releases"]) == sorted([r2, cr.images_rid(
        {"postgres": "sha256:p", "archon-server": "sha256:s3"})])


def test_a_missing_container_records_nothing(root):
    run = record(root, {"postgres": "sha256:p"})
    assert run.returncode != 0 and "archon-server" in run.stderr
    assert not (root / "releases").exists()


def test_the_failed_gate_rollback_script_puts_the_previous_images_and_compose_back():
    script = cr.rollback_script("/opt/archon", "dc.yml", ".env.production", "archon-production",
                                ["archon-postgres", "archon-server"], "not healthy", None, 60, "docker-compose", ["agents"])
    subprocess.run(["bash", "-n", "-c", script], check=True)
    assert "done < .previous-images" in script and "cp -p /opt/archon/dc.yml.previous /opt/archon/dc.yml" in script
    assert "docker-compose -p archon-production -f dc.yml --env-file .env.production --profile agents up -d" in script
    assert "restore" not in script.replace("restored", "") and script.endswith("exit 1")
    with_db = cr.rollback_script("/opt/archon", "dc.yml", ".env", "p", ["c"], "x",
                                 "/opt/archon/bin/archon-migrate restore /root/backups/archon-release-9", 60)
    subprocess.run(["bash", "-n", "-c", with_db], check=True)
    assert "{ /opt/archon/bin/archon-migrate restore /root/backups/archon-release-9; }" in with_db
    assert cr.previous_images_text({"kong": {"id": "sha256:k", "name": "kong:2"}}) == "kong sha256:k kong:2\n"


def test_archons_data_commands_are_archon_migrate_backup_and_restore(monkeypatch):
    monkeypatch.setattr(archon, "detected_cli", lambda: "docker-compose")
    assert archon.backup_command(data(), "/root/backups/archon-release-1") == \
        "/opt/archon/bin/archon-migrate backup /root/backups/archon-release-1 4"  # keep 3: 3 + 1 backups
    assert archon.restore_command(data(), "/root/backups/archon-release-1") == \
        "COMPOSE=docker-compose /opt/archon/bin/archon-migrate restore /root/backups/archon-release-1"


def test_the_migrate_script_backs_up_in_the_format_restore_reads():
    script = archon.render_migrate_script(data())
    subprocess.run(["bash", "-n", "-c", script], check=True)
    backup = script.split("cmd_backup() {")[1].split("\n}\n")[0]
    assert "dump_current" in backup and "archon-release-*" in backup
    dump = script.split("dump_current() {")[1].split("\n}\n")[0]
    for name in ("row-counts-old.txt", "archon-schemas.sql", "extensions.sql"):  # what cmd_restore checks for
        assert name in dump and name in script.split("cmd_restore() {")[1].split("\n}\n")[0]
    assert 'backup) cmd_backup "${2:-}" "${3:-}" ;;' in script


def test_backups_the_history_names_are_never_pruned_by_later_attempts(tmp_path):
    """Each image change backs up first, also attempts that roll back: keeping only the
    newest KEEP pushed out the backup a rollback needs (real Archon, 4 failed attempts)."""
    script = archon.render_migrate_script(data())
    lib = Path(__file__).resolve().parents[2] / "templates/opt/infra/lib"  # the host's /opt/infra/lib
    helper = ("release_backups() {" + script.split("release_backups() {")[1].split("\n}\n")[0] + "\n}\n"
              ).replace("/opt/infra/lib", str(lib))
    prune = script.split('    if [ "$keep" -gt 0 ] && named=$(release_backups "$keep"); then')[1].split("\n    fi\n")[0]
    root = tmp_path / "backups"
    (tmp_path / "releases").mkdir()
    names = [str(root / f"archon-release-2026120{i}T000000") for i in range(1, 8)]
    for name in names:
        Path(name).mkdir(parents=True)
    history = [{"id": "r1", "backup": None}, {"id": "r2", "backup": names[0]}, {"id": "r1", "backup": names[1]},
               {"id": "r2", "backup": names[2]}]  # then 4 failed attempts: names[3:]
    (tmp_path / "releases" / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in history))
    run = subprocess.run(["bash", "-c", f"{helper}\nkeep=2; DIR={tmp_path}; BACKUP_ROOT={root}\n"
                          f'if [ "$keep" -gt 0 ] && named=$(release_backups "$keep"); then{prune}\n    fi'],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    # kept: the newest 2, and what the lines of the last 2 distinct releases (r1, r2) name
    assert sorted(str(p) for p in root.iterdir()) == [names[0], names[1], names[2], names[5], names[6]]


def test_keep_releases_is_checked_and_the_series_is_archons():
    knob = settings.declarations()["archon_keep_releases"]  # typed in group_data (deploys/settings.py)
    assert knob.type_name == "count (a whole number >= 1)" and knob.default == 3
    assert knob.problem(0) == "0 is not a count (1 or more)" and knob.problem(True) and knob.problem(2) is None
    (series,) = archon.release_series(data())
    assert series.root == "/opt/archon" and series.names == ("images",)
    assert archon.release_backup_path(data(), "20261202T060000") == "/root/backups/archon-release-20261202T060000"


def test_a_release_action_that_is_not_one_is_refused():
    with pytest.raises(ConfigError, match="release_action 'undo'"):
        archon.release_actions(data(release_action="undo"))
    assert archon.release_actions(data()) is False



# docker for the up-failure test: `compose ... up` fails while the compose file names the
# broken image; `tag` and `inspect` (always healthy) are logged
FAKE_DOCKER_COMPOSE = """#!/bin/sh
echo "$*" >> "$DOCKER_LOG"
case "$1" in
  tag) exit 0 ;;
  inspect) echo healthy ;;
  compose) if grep -q broken dc.yml; then echo "dependency failed to start: container archon-server is unhealthy" >&2; exit 1; fi ;;
esac
"""


def test_a_failed_up_after_an_image_change_puts_the_previous_images_and_compose_back(tmp_path, monkeypatch):
    """`up -d` waits for depends_on healthy: a server image that never gets healthy fails it
    before the gate; the same way back as the gate's must run there, and the run still fails."""
    monkeypatch.setattr(cr, "detected_cli", lambda: "docker compose")
    (tmp_path / "bin").mkdir()
    docker = tmp_path / "bin" / "docker"
    docker.write_text(FAKE_DOCKER_COMPOSE)
    docker.chmod(0o755)
    stack = tmp_path / "archon"
    stack.mkdir()
    (stack / "dc.yml").write_text("image: archon-server:broken\n")
    (stack / "dc.yml.previous").write_text("image: archon-server:1\n")
    (stack / cr.PREVIOUS_IMAGES).write_text(cr.previous_images_text(
        {"archon-server": {"id": "sha256:s1", "name": "archon-server:1"}}))
    upgraded = {"yes": True}
    fallback = cr.rollback_if_up_fails(str(stack), "dc.yml", ".env", "archon", ["archon-server"],
                                       upgraded=lambda: upgraded["yes"], timeout_s=4)
    up = compose.up_command("docker compose", "archon", str(stack), f"{stack}/dc.yml", f"{stack}/.env", [],
                            fallback()).get_raw_value()
    env = {**os.environ, "PATH": f"{docker.parent}:{os.environ['PATH']}", "DOCKER_LOG": str(tmp_path / "log")}
    run = subprocess.run(["sh", "-c", up], capture_output=True, text=True, env=env)
    assert run.returncode == 1
    assert "dependency failed to start" in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (f"{cr.UP_FAILED}. Rolled back to the previous images; "
                                                   "the run fails.")
    assert (stack / "dc.yml").read_text() == "image: archon-server:1\n"
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls[0].startswith("compose -p archon -f") and calls[1] == "tag sha256:s1 archon-server:1"
    assert calls[2].startswith("compose -p archon -f dc.yml --env-file .env up -d")
    # no image change in this run (a first start): compose's own error fails it, nothing rolls back
    upgraded["yes"] = False
    assert fallback() is None
    assert "||" not in compose.up_command("docker compose", "archon", str(stack), f"{stack}/dc.yml", None, [],
                                          fallback()).get_raw_value()


class StackHost:
    """host for backup_before_release: StackImages answers `st`; noops and logs kept."""

    def __init__(self, st):
        self.st, self.noops, self.logs = st, [], []

    def get_fact(self, fact, **kwargs):
        assert fact is cr.StackImages, fact
        return self.st

    def noop(self, text):
        self.noops.append(text)

    def log(self, text, log_func=None):
        self.logs.append(text)


def backup_commands(monkeypatch, running: dict, wanted: dict) -> tuple[list, StackHost]:
    fake = StackHost({"running": running, "wanted": wanted})
    monkeypatch.setattr(cr, "host", fake)
    commands = list(cr.backup_before_release._inner(
        data_dir="/opt/archon", compose_file="dc.yml", project="archon", containers=CONTAINERS,
        images={"postgres": "pg:17", "archon-server": "server:2"}, backup="archon-migrate backup /b", needs="postgres"))
    return [c.get_raw_value() for c in commands], fake


def test_a_first_start_takes_no_backup_even_with_the_database_already_started(monkeypatch):
    """archon's schema step starts postgres before the stack: the run must not back up, nor
    leave a way back to a stack that never served (the history says no backup either)."""
    pg = {"id": "sha256:p", "name": "pg:17"}
    wanted = {"postgres": "sha256:p", "archon-server": "sha256:s2"}
    commands, fake = backup_commands(monkeypatch, {"postgres": pg}, wanted)
    assert commands == [] and fake.noops[0].startswith("no running service changes its image (archon-server")
    assert cr.replaces_running({"running": {"postgres": pg}, "wanted": wanted}, sorted(CONTAINERS)) == []
    # an upgrade: the running server gets another image -> backup, then the way back saved
    running = {"postgres": pg, "archon-server": {"id": "sha256:s1", "name": "server:2"}}
    commands, fake = backup_commands(monkeypatch, running, wanted)
    assert commands[0] == "archon-migrate backup /b" and ".previous-images" in commands[1]
    assert cr.replaces_running({"running": running, "wanted": wanted}, sorted(CONTAINERS)) == ["archon-server"]


class RollbackHost(StackHost):
    """host for archon.rollback: the stack runs release 2; `present`: backups on the host."""

    def __init__(self, st, present):
        super().__init__(st)
        self.present = present

    def get_fact(self, fact, **kwargs):
        if fact is cr.StackImages:
            return self.st
        return kwargs["path"] in self.present


def test_a_rollback_whose_backup_is_gone_is_refused_before_anything_changes(monkeypatch):
    """Refused at plan time: the run's own backup of the current database (the first
    operation) would otherwise be taken first, and push out another release's backup."""
    from deploys.parts import releases as releases_part
    services = archon.services_enabled(data())
    running = {s: {"id": "sha256:2", "name": "x"} for s in services}
    ids = {s: "sha256:1" for s in services}
    r1 = cr.images_rid(ids)
    state = {"components": {"images": {"releases": {r1: {"meta": {"images": {}, "image_ids": ids}}}}},
             "history": [{"id": "app1"}, {"id": "app2", "backup": "/root/backups/archon-release-1"}]}
    monkeypatch.setattr(releases_part, "read", lambda root, names: state)
    monkeypatch.setattr(archon.compose_releases, "images_retagged", lambda **kw: pytest.fail("changed the host"))
    monkeypatch.setattr(archon, "main", lambda *a, **kw: pytest.fail("ran the deploy"))
    series = archon.release_series(data())[0]
    for present, message in (((), "archon-release-1, the data of release app1, is gone"),
                             (None, "no data backup was taken when release app1 was left")):
        fake = RollbackHost({"running": running, "wanted": {}}, present or ())
        monkeypatch.setattr(cr, "host", fake)
        monkeypatch.setattr(archon, "host", fake)
        target = {"id": "app1", "components": {"images": r1}}
        if present is None:
            state["history"][1]["backup"] = None
        with pytest.raises(ConfigError, match=message):
            archon.rollback(data(), series, target)
