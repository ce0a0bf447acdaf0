"""ingestor: the rebuild key (Dockerfile, build args, base image), the Docker version the
package source would install, and bin/ingestor-release's record of the live release
(compose + env files; a hand-deployed stack adopted) that a rollback restores."""

import json
import os
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

from deploys import ingestor
from deploys.parts.host_steps import _WAIT, host_step
from facts.ingestor import package_version, parse_apt_candidates, stale_bases
from tests.unit.test_ingestor_deploy import SAMPLE, SCRIPT, data


@pytest.fixture()
def script():
    """bin/ingestor-release's functions, with no Docker: no containers, no images (a test
    patches `run`/`inspect`/`container` in their globals to say otherwise)."""
    loaded = runpy.run_path(str(SCRIPT))
    g = loaded["release"].__globals__
    g["run"] = lambda argv, check=True, timeout=900, capture=True: subprocess.CompletedProcess(argv, 0, "", "")
    g["inspect"] = lambda ref, fmt: None
    g["container"] = lambda plan, service: None
    return loaded


# ----------------------------------------------------------------------------- rebuild key


def test_dockerfile_bases_skip_stages_and_resolve_args():
    text = ("ARG PY=3.12\nFROM python:${PY}-alpine AS builder\nRUN x\nFROM --platform=linux/amd64 node:18 AS web\n"
            "FROM builder AS final\nFROM scratch\nFROM nginx:alpine\nCOPY --from=web / /\n")
    assert ingestor.dockerfile_bases(text) == ["python:3.12-alpine", "node:18", "nginx:alpine"]
    assert ingestor.dockerfile_bases(text, {"PY": "3.11"})[0] == "python:3.11-alpine"


def test_the_sample_checkouts_bases_are_upstreams_from_lines():
    bases = ingestor.service_bases(data())
    assert bases["data-api"] == ["python:3.11-alpine"]
    assert bases["websocket-ingestion"] == ["python:3.12-alpine"]
    assert "influxdb" not in bases


def test_the_dockerfile_is_part_of_the_key_even_outside_the_source_paths(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "src")
    (tmp_path / "src/docker").mkdir()
    (tmp_path / "src/docker/admin.Dockerfile").write_text("FROM python:3.12-alpine\n")
    services = data().ingestor_services
    services["admin-api"]["dockerfile"] = "docker/admin.Dockerfile"
    d = data(ingestor_source=str(tmp_path / "src"), ingestor_services=services)
    before = ingestor.source_digests(d)
    (tmp_path / "src/docker/admin.Dockerfile").write_text("FROM python:3.12-slim\n")
    after = ingestor.source_digests(d)
    assert [s for s in before if before[s] != after[s]] == ["admin-api"]
    assert ingestor.service_bases(d)["admin-api"] == ["python:3.12-slim"]


def test_a_missing_dockerfile_is_named():
    services = data().ingestor_services
    services["admin-api"]["dockerfile"] = "nowhere/Dockerfile"
    with pytest.raises(ingestor.ConfigError, match="nowhere/Dockerfile does not exist .* of admin-api"):
        ingestor.service_bases(data(ingestor_services=services))


def test_stale_bases_compares_the_recorded_base_with_the_host():
    state = {"ids": {"app:latest": "sha256:a", "python:3.12": "sha256:p2", "gone:1": None},
             "builds": {"sha256:a": {"python:3.12": "sha256:p1", "gone:1": "sha256:g"}}}
    assert stale_bases("app:latest", ["python:3.12", "gone:1"], state) == ["python:3.12"]
    state["builds"]["sha256:a"]["python:3.12"] = "sha256:p2"
    assert stale_bases("app:latest", ["python:3.12", "gone:1"], state) == []  # a ref the host lacks: not counted
    assert stale_bases("app:latest", ["python:3.12"], {"ids": state["ids"], "builds": {}}) == ["python:3.12"]
    assert stale_bases("missing:latest", ["python:3.12"], state) == []  # not built yet: the label decides


def test_release_plan_carries_bases_and_env_file_names():
    d = data()
    plan = ingestor.release_plan(d, ingestor.source_digests(d), "002", ingestor.theirs(d)[1], ingestor.service_bases(d))
    assert plan["services"]["sports-data"]["bases"] == ["python:3.11-alpine"]
    assert plan["services"]["influxdb"]["bases"] == []
    assert plan["env_file_names"] == ["infrastructure/.env.websocket", "infrastructure/.env.weather",
                                      "infrastructure/.env.influxdb"]


# ----------------------------------------------------------------------------- Docker version


@pytest.mark.parametrize("raw, version", [
    ("20.10.24+dfsg1-1+deb12u1", "20.10.24"), ("5:24.0.7-1~debian.12~bookworm", "24.0.7"),
    ("(none)", None), ("", None), (None, None)])
def test_package_version(raw, version):
    assert package_version(raw) == version


def test_apt_candidates_are_parsed_from_apt_cache_policy():
    output = ["docker.io:", "  Installed: (none)", "  Candidate: 20.10.24+dfsg1-1+deb12u1", "  Version table:",
              "     20.10.24+dfsg1-1+deb12u1 500", "docker-ce:", "  Installed: (none)", "  Candidate: (none)"]
    assert parse_apt_candidates(output) == {"docker.io": "20.10.24", "docker-ce": None}


# ----------------------------------------------------------------------------- waiting first


def test_the_wait_for_an_unfinished_step_is_the_one_host_step_runs():
    assert _WAIT in str(host_step("ingestor-release", ["/bin/true"]).get_raw_value())


def test_layout_waits_for_an_unfinished_release_before_it_syncs():
    source = (Path(ingestor.__file__)).read_text()
    layout = source[source.index("def layout("):]
    assert layout.index("wait_for_step(") < layout.index("tree_sync(")
    # the files a stack started by hand in <dir>/src reads are kept before the sync overwrites them
    assert layout.index("keep_pre_record_files(") < layout.index("tree_sync(")


# ----------------------------------------------------------------------------- the live release


def plan_for(tmp_path):
    base = tmp_path / "opt"
    for d in ("compose", "env", "src/infrastructure"):
        (base / d).mkdir(parents=True)
    files = {"compose/docker-compose.yml": "services: {}\n", "compose/docker-compose.override.yml": "x: 1\n",
             "env/compose.env": "INFLUXDB_TOKEN=good\n", "src/infrastructure/.env.influxdb": "INFLUXDB_TOKEN=good\n"}
    for rel, text in files.items():
        (base / rel).write_text(text)
        os.chmod(base / rel, 0o600 if "env" in rel else 0o644)
    return {"dir": str(base), "project": "p", "project_directory": str(base / "src"),
            "compose_files": [str(base / "compose/docker-compose.yml"), str(base / "compose/docker-compose.override.yml")],
            "env_file": str(base / "env/compose.env"),
            "env_files": [str(base / "src/infrastructure/.env.influxdb"), str(base / "env/compose.env")],
            "services": {"data-api": {"image": "ha-ingestor-data-api:latest"}, "influxdb": {"image": None}}}


def test_a_rollback_restores_the_env_files_of_the_last_healthy_release(tmp_path, script):
    plan = plan_for(tmp_path)
    script["record_release"](plan)
    live = Path(plan["dir"]) / "stack"
    assert live.is_symlink() and oct(live.stat().st_mode & 0o777) == "0o700"
    for path in plan["env_files"]:  # the next release's env files: a wrong token
        Path(path).write_text("INFLUXDB_TOKEN=wrong\n")
    target, images, ran = script["restore_release_files"](plan, str(live))
    assert [Path(p).read_text() for p in plan["env_files"]] == ["INFLUXDB_TOKEN=good\n"] * 2
    assert oct(Path(plan["env_files"][0]).stat().st_mode & 0o777) == "0o600"
    assert target["compose_files"] == plan["compose_files"] and ran == ["data-api", "influxdb"]
    assert images == {"data-api": "ha-ingestor-data-api:latest"}


def test_without_a_record_the_plan_is_the_target(tmp_path, script):
    plan = plan_for(tmp_path)
    assert script["restore_release_files"](plan, str(tmp_path / "none")) == (plan, {}, None)


def test_a_hand_deployed_stack_is_recorded_from_compose_labels(tmp_path, script, monkeypatch):
    plan = plan_for(tmp_path)
    plan["env_file_names"] = ["infrastructure/.env.influxdb"]
    hand = tmp_path / "hand"
    (hand / "infrastructure").mkdir(parents=True)
    (hand / "docker-compose.yml").write_text("services: {hand: 1}\n")
    (hand / ".env").write_text("INFLUXDB_TOKEN=hand\n")
    (hand / "infrastructure/.env.influxdb").write_text("INFLUXDB_TOKEN=hand\n")
    labels = {"com.docker.compose.project.working_dir": str(hand),
              "com.docker.compose.project.config_files": str(hand / "docker-compose.yml")}
    g = script["adopt_running_stack"].__globals__

    def fake_run(argv, check=True, timeout=900, capture=True):
        return subprocess.CompletedProcess(argv, 0, "c1\n", "")

    def fake_inspect(ref, fmt):
        return {"{{json .Config.Labels}}": json.dumps(labels), "{{.State.Status}}": "running",
                "{{.Config.Image}}": "ha-ingestor-data-api"}.get(fmt)

    monkeypatch.setitem(g, "run", fake_run)
    monkeypatch.setitem(g, "inspect", fake_inspect)
    monkeypatch.setitem(g, "container", lambda plan, service: "c1" if service == "data-api" else None)
    record = script["adopt_running_stack"](plan)
    assert record["source"] == f"running stack in {hand}" and record["services"] == ["data-api"]
    assert record["env_file"] == str(hand / ".env") and record["images"] == {"data-api": "ha-ingestor-data-api"}
    (hand / ".env").write_text("changed\n")
    target, _, ran = script["restore_release_files"](plan, str(Path(plan["dir"]) / "stack"))
    assert (hand / ".env").read_text() == "INFLUXDB_TOKEN=hand\n"
    assert target["project_directory"] == str(hand) and target["compose_files"] == [str(hand / "docker-compose.yml")]
    assert ran == ["data-api"]


def test_a_stack_our_earlier_deploy_started_is_recorded_with_the_compose_files_it_runs(tmp_path, script, monkeypatch):
    """A host deployed before release records: this run has already staged the new compose
    files and kept the running ones as `*.previous`; the record holds those."""
    plan = plan_for(tmp_path)
    workdir = Path(plan["project_directory"])
    workdir.mkdir(parents=True, exist_ok=True)
    compose = Path(plan["compose_files"][0])
    compose.write_text("services: {new: 1}\n")
    Path(str(compose) + ".previous").write_text("services: {running: 1}\n")
    labels = {"com.docker.compose.project.working_dir": str(workdir),
              "com.docker.compose.project.config_files": str(compose)}
    g = script["adopt_running_stack"].__globals__
    monkeypatch.setitem(g, "run", lambda argv, check=True, timeout=900, capture=True:
                        subprocess.CompletedProcess(argv, 0, "c1\n", ""))
    monkeypatch.setitem(g, "inspect", lambda ref, fmt: {"{{json .Config.Labels}}": json.dumps(labels),
                                                        "{{.State.Status}}": "running"}.get(fmt, "img"))
    monkeypatch.setitem(g, "container", lambda plan, service: None)
    record = script["adopt_running_stack"](plan)
    assert record["source"] == "deploy (before release records)"
    script["restore_release_files"](plan, str(Path(plan["dir"]) / "stack"))
    assert compose.read_text() == "services: {running: 1}\n"


class FakeHost:
    def __init__(self, facts):
        self.facts = facts

    def get_fact(self, fact, **kwargs):
        return self.facts[fact.__name__]


class PathFacts(FakeHost):
    """Facts by path (File, Sha256File ...): `facts` {path: value}; noop and log kept."""

    def get_fact(self, fact, path):
        return self.facts.get(path)

    def noop(self, message):
        self.facts["noop"] = message

    def log(self, message):
        self.facts.setdefault("log", []).append(message)


def test_preflight_checks_the_version_the_package_source_would_install(monkeypatch):
    monkeypatch.setattr(ingestor, "host", FakeHost({"AptCandidates": {"docker.io": "20.10.24"}}))
    assert ingestor.docker_candidate_problem(data(), "20.10") is None
    problem = ingestor.docker_candidate_problem(data(), "24")
    assert "would install docker.io 20.10.24, older than 24" in problem
    # Docker's own repository is not there before the install: checked after it instead
    assert ingestor.docker_candidate_problem(data(docker_package_source="docker"), "24") is None
    monkeypatch.setattr(ingestor, "host", FakeHost({"AptCandidates": {}}))
    assert ingestor.docker_candidate_problem(data(), "24") is None


def test_the_version_is_checked_again_after_the_install_before_any_release_step():
    source = Path(ingestor.__file__).read_text()
    main = source[source.index("def main(data):"):]
    assert main.index("docker_host(") < main.index("docker_version_gate(data)") < main.index("layout(data, values, tree)")
