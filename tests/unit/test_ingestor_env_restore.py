"""ingestor's env files across releases: `make ingestor-restore` puts a backup's env files
back (bin/ingestor-release restore_env_files), and before the first release record the
env and compose files a running stack reads are kept (deploys/ingestor.keep_pre_record_files)
so that the first release's rollback restores them, not this run's."""

import json
import os
import subprocess
from pathlib import Path

from deploys import ingestor
from deploys.parts.tree_sync import read_tree
from tests.unit.test_ingestor_deploy import data
from tests.unit.test_ingestor_release_record import PathFacts, plan_for, script  # noqa: F401


def test_a_backup_brings_back_the_env_files_it_was_taken_under(tmp_path, script):  # noqa: F811
    plan = plan_for(tmp_path)
    script["record_release"](plan)
    backup = tmp_path / "backups/ingestor-1"
    backup.mkdir(parents=True)
    script["shutil"].copytree(Path(plan["dir"]) / "stack", backup / "release")
    for path in plan["env_files"]:  # changed after the backup
        Path(path).write_text("INFLUXDB_TOKEN=later\n")
        os.chmod(path, 0o644)
    script["restore_env_files"](plan, str(backup))
    for path in plan["env_files"]:
        assert Path(path).read_text() == "INFLUXDB_TOKEN=good\n"
        assert Path(path).stat().st_mode & 0o777 == 0o600
    assert not list(Path(plan["env_files"][0]).parent.glob("*.restore"))


def test_a_hand_stacks_env_files_map_onto_ours(tmp_path, script):  # noqa: F811
    plan = plan_for(tmp_path)
    hand = tmp_path / "hand"
    saved = tmp_path / "backup/release"
    (saved / "files").mkdir(parents=True)
    (saved / "files/00-.env").write_text("A=hand\n")
    (saved / "files/01-.env.influxdb").write_text("INFLUXDB_TOKEN=hand\n")
    (saved / "files/02-docker-compose.yml").write_text("services: {}\n")
    (saved / "release.json").write_text(json.dumps({
        "source": f"running stack in {hand}", "project_directory": str(hand), "env_file": str(hand / ".env"),
        "files": {str(hand / ".env"): "00-.env", str(hand / "infrastructure/.env.influxdb"): "01-.env.influxdb",
                  str(hand / "docker-compose.yml"): "02-docker-compose.yml"}}))
    found = script["backup_env_files"](plan, str(tmp_path / "backup"))
    assert found == {plan["env_file"]: str(saved / "files/00-.env"),
                     plan["env_files"][0]: str(saved / "files/01-.env.influxdb")}  # compose files are not env files
    assert script["backup_env_files"](plan, str(tmp_path / "nothing")) == {}


def running_stack(script, monkeypatch, labels):  # noqa: F811
    """One running container `c1` of the project, with compose's `labels`."""
    g = script["adopt_running_stack"].__globals__
    monkeypatch.setitem(g, "run", lambda argv, check=True, timeout=900, capture=True:
                        subprocess.CompletedProcess(argv, 0, "c1\n", ""))
    monkeypatch.setitem(g, "inspect", lambda ref, fmt: {"{{json .Config.Labels}}": json.dumps(labels),
                                                        "{{.State.Status}}": "running"}.get(fmt, "img"))
    monkeypatch.setitem(g, "container", lambda plan, service: "c1")


def test_the_first_record_holds_the_env_files_kept_before_this_run_wrote(tmp_path, script, monkeypatch):  # noqa: F811
    """Our deploy from before release records (or a stack started by hand in <dir>/src):
    this run already wrote new env files; the `.previous` copies are what runs."""
    plan = plan_for(tmp_path)
    plan["env_file_names"] = ["infrastructure/.env.influxdb"]
    for path in plan["env_files"]:
        Path(path + ".previous").write_text("INFLUXDB_TOKEN=running\n")
        Path(path).write_text("INFLUXDB_TOKEN=new\n")
    labels = {"com.docker.compose.project.working_dir": plan["project_directory"],
              "com.docker.compose.project.config_files": plan["compose_files"][0],
              "com.docker.compose.project.environment_file": plan["env_file"]}
    running_stack(script, monkeypatch, labels)
    script["adopt_running_stack"](plan)
    script["restore_release_files"](plan, str(Path(plan["dir"]) / "stack"))  # the first release's rollback
    assert [Path(p).read_text() for p in plan["env_files"]] == ["INFLUXDB_TOKEN=running\n"] * 2
    script["record_release"](plan)  # a healthy release: the kept copies are done with
    assert not [p for p in plan["env_files"] if os.path.exists(p + ".previous")]


def test_env_files_are_kept_once_and_only_before_the_first_record(monkeypatch):
    paths = ["/o/src/infrastructure/.env.influxdb", "/o/env/compose.env"]

    def commands(facts):
        monkeypatch.setattr(ingestor, "host", PathFacts(dict(facts)))
        return [str(c.get_raw_value()) for c in ingestor.keep_pre_record_files._inner(paths=paths, records=["/o/stack/release.json", "/o/live/release.json"])]

    assert commands({"/o/live/release.json": {"size": 1}}) == []  # a record of the earlier layout exists
    assert commands({"/o/stack/release.json": {"size": 1}}) == []  # a record exists
    assert commands({}) == []  # fresh install: nothing to keep
    assert commands({paths[0]: {"size": 1}, paths[1]: {"size": 1}, paths[1] + ".previous": {"size": 1}}) == [
        "cp -p /o/src/infrastructure/.env.influxdb /o/src/infrastructure/.env.influxdb.previous"]


def test_the_kept_files_are_ours_and_the_compose_files_of_the_checkout():
    d = data()
    paths = ingestor.pre_record_paths(d)
    assert paths == ["/opt/ha-ingestor/src/infrastructure/.env.websocket", "/opt/ha-ingestor/src/infrastructure/.env.weather",
                     "/opt/ha-ingestor/src/infrastructure/.env.influxdb", "/opt/ha-ingestor/env/compose.env",
                     "/opt/ha-ingestor/src/docker-compose.yml", "/opt/ha-ingestor/src/docker-compose.override.yml"]
    assert ingestor.release_plan(d, ingestor.source_digests(d), "002", ingestor.theirs(d)[1],
                                 ingestor.service_bases(d))["pre_record_files"] == paths


def test_the_tree_sync_leaves_the_kept_copies_in_the_checkout(tmp_path):
    """`*.previous` is excluded: the sync neither sends nor deletes them."""
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    (tmp_path / "docker-compose.yml.previous").write_text("services: {hand: 1}\n")
    d = data()
    assert read_tree(tmp_path, d.ingestor_source_exclude, d.ingestor_source_exclude_dirs).files == ["docker-compose.yml"]


def test_a_stack_started_by_hand_in_the_checkout_keeps_its_own_compose_file(tmp_path, script, monkeypatch):  # noqa: F811
    """`docker compose up -d` in <dir>/src with an edited docker-compose.yml: the tree sync
    put the checkout's copy over it, the kept `.previous` is what runs; the record holds
    that one, a rollback puts it back, and a healthy release removes the kept copies."""
    plan = plan_for(tmp_path)
    src = Path(plan["project_directory"])
    compose = src / "docker-compose.yml"
    compose.write_text("services: {checkout: 1}\n")
    Path(str(compose) + ".previous").write_text("services: {edited-by-hand: 1}\n")
    plan["pre_record_files"] = plan["env_files"] + [str(compose)]
    labels = {"com.docker.compose.project.working_dir": str(src), "com.docker.compose.project.config_files": str(compose)}
    running_stack(script, monkeypatch, labels)
    record = script["adopt_running_stack"](plan)
    assert record["source"] == f"running stack in {src}"  # not our own compose files: a hand stack
    target, _, _ = script["restore_release_files"](plan, str(Path(plan["dir"]) / "stack"))
    assert compose.read_text() == "services: {edited-by-hand: 1}\n"
    assert target["compose_files"] == [str(compose)] and target["project_directory"] == str(src)
    script["record_release"](plan)
    assert not os.path.exists(str(compose) + ".previous")
