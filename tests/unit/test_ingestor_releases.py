"""ingestor releases in deploys/parts/releases.py's layout (bin/ingestor-release): one
record per release under <dir>/releases/stack/<rid>/ with `.complete` last, the live link
<dir>/stack, history lines in `releases.history_entry`'s format (so `make releases` lists
them and `make rollback` picks from them), `rollback PLAN RID`, the prune, and the
adoption of the one-record layout (<dir>/live) an operator's host has from before."""

import json
import subprocess
import sys
from pathlib import Path

from deploys import ingestor
from deploys.parts import release_records, releases
from facts.releases import RELEASES_SCRIPT
from tests.unit.test_ingestor_release_record import FakeHost, PathFacts, plan_for, script  # noqa: F401

META = {"commit": "abc123def456", "dirty": False, "by": "op@ingestor-1"}


def full_plan(tmp_path):
    plan = plan_for(tmp_path)
    plan.update(backup_dir=str(tmp_path / "backups"), keep=10, sqlite={}, compose_files=plan["compose_files"],
                influx={"service": "influxdb"}, timeout_s=1, interval_s=0.01, groups=[["influxdb", "data-api"]],
                migrate={"service": "data-api"})
    plan["services"]["data-api"]["source_digest"] = "d1"
    return plan


def facts(root):
    """The Releases fact, run here on the test's directory."""
    out = subprocess.run([sys.executable, "-c", RELEASES_SCRIPT, "state", str(root), "stack"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def docker(g, images):
    """A fake Docker: `images` {ref: id}; `docker tag ID REF` and `docker rmi REF` change it."""
    calls = []

    def run(argv, check=True, timeout=900, capture=True):
        calls.append(argv)
        if argv[:2] == ["docker", "tag"]:
            images[argv[3]] = images.get(argv[2], argv[2])
        if argv[:2] == ["docker", "rmi"]:
            images.pop(argv[2], None)
        return subprocess.CompletedProcess(argv, 0, "", "")

    def inspect(ref, fmt):
        if ref == "c-data-api":
            return {"{{.State.Status}}": "running", "{{.Image}}": images["ha-ingestor-data-api:latest"]}.get(fmt)
        if fmt != "{{.Id}}":
            return None
        return ref if ref in images.values() else images.get(ref)

    g["run"], g["inspect"] = run, inspect
    g["container"] = lambda plan, service: "c-data-api" if service == "data-api" else None
    g["start_in_order"] = lambda plan, migrate_first=True, only=None: calls.append(["started", *(only or [])])
    return calls


def two_releases(plan, script, images, backup=None):  # noqa: F811
    """A first release, then a second with another env file and image; (first, second)."""
    first = script["record_release"](plan, META)
    Path(plan["env_files"][0]).write_text("INFLUXDB_TOKEN=second\n")
    images["ha-ingestor-data-api:latest"] = "sha256:two"
    return first, script["record_release"](plan, META, backup)


def test_the_records_are_the_libraries_and_a_release_prunes_to_keep_releases(tmp_path, script):  # noqa: F811
    """The script keeps no copy of the record format (it imports release_records). After a
    release (and a rollback) it prunes to `keep_releases` with the dropped releases'
    `:rel-` tags: never the live release, nor one built but never switched to."""
    assert Path(script["records"].__file__).resolve() == release_records.SOURCE.resolve()
    plan = dict(full_plan(tmp_path), keep_releases=1)
    g = script["release"].__globals__
    images = {"ha-ingestor-data-api:latest": "sha256:one"}
    docker(g, images)
    first, second = two_releases(plan, script, images)
    Path(plan["env_files"][0]).write_text("INFLUXDB_TOKEN=built-never-switched\n")
    images["ha-ingestor-data-api:latest"] = "sha256:three"
    pending = script["write_record"](plan, {"source": "deploy"}, plan["compose_files"] + plan["env_files"],
                                     image_ids={"data-api": "sha256:three"}, meta=META)  # cut off before its switch
    script["prune_releases"](plan)
    kept = sorted(p.name for p in (Path(plan["dir"]) / "releases/stack").iterdir())
    assert kept == sorted([second, pending]) and script["live_rid"](plan) == second
    assert f"ha-ingestor-data-api:rel-{first}" not in images and images[f"ha-ingestor-data-api:rel-{second}"] == "sha256:two"
    assert releases.report_lines(facts(plan["dir"]), ["stack"])[2].endswith("[pruned]")  # listed, gone


def test_two_releases_are_listed_rolled_back_and_pruned(tmp_path, script):  # noqa: F811
    plan = full_plan(tmp_path)
    g = script["release"].__globals__
    images = {"ha-ingestor-data-api:latest": "sha256:one"}
    calls = docker(g, images)
    first, second = two_releases(plan, script, images, "/backups/ingestor-2")
    env = Path(plan["env_files"][0])
    assert first != second and images["ha-ingestor-data-api:rel-" + first] == "sha256:one"
    base = Path(plan["dir"])
    assert (base / "stack").resolve() == (base / "releases/stack" / second).resolve()
    record = json.loads((base / "releases/stack" / second / "release.json").read_text())
    assert record["image_ids"] == {"data-api": "sha256:two"} and record["tags"] == {
        "data-api": f"ha-ingestor-data-api:rel-{second}"}
    saved = base / "releases/stack" / first / "files"
    assert sorted(oct(p.stat().st_mode & 0o777) for p in saved.iterdir() if "env" in p.name) == ["0o600", "0o600"]
    st = facts(base)
    lines = releases.report_lines(st, ["stack"], "ha-ingestor")
    assert lines[0].startswith("ha-ingestor releases (newest first; * = live " + releases.app_id({"stack": second}))
    assert lines[1].startswith(f" * {releases.app_id({'stack': second})}") and "deploy" in lines[1]
    assert lines[2].startswith(f"   {releases.app_id({'stack': first})}") and "commit abc123def456" in lines[2]
    target = releases.rollback_target(st, ["stack"], None)
    assert target["components"] == {"stack": first}

    # rollback PLAN RID: the first release's files and image back, the data it ran with, its line
    (tmp_path / "backups/ingestor-1").mkdir(parents=True)
    (tmp_path / "backups/ingestor-1/backup.json").write_text(json.dumps({"release": first, "files": {}}))
    restored = []
    g["restore_sqlite"] = lambda plan, backup_dir: restored.append(backup_dir)
    script["rollback_to"](plan, first, META)
    assert env.read_text() == "INFLUXDB_TOKEN=good\n" and oct(env.stat().st_mode & 0o777) == "0o600"
    assert ["docker", "tag", f"ha-ingestor-data-api:rel-{first}", "ha-ingestor-data-api:latest"] in calls
    assert images["ha-ingestor-data-api:latest"] == "sha256:one" and ["started", "data-api", "influxdb"] in calls
    assert restored == [str(tmp_path / "backups/ingestor-1")]
    st = facts(base)
    assert st["components"]["stack"]["current"] == first
    last = st["history"][-1]
    assert last["action"] == "rollback" and last["from"] == releases.app_id({"stack": second})
    assert last["backup"].startswith(str(tmp_path / "backups/ingestor-"))  # the data of the release it left
    assert json.loads(Path(last["backup"], "backup.json").read_text())["release"] == second
    assert releases.report_lines(st, ["stack"])[1].startswith(f" * {releases.app_id({'stack': first})}")

    # keep 1: the release left behind goes, with its tag; the live one never
    plan_rids = releases.prune_plan(st, ["stack"], 1)
    assert plan_rids == {"stack": [second]}
    script["drop_releases"](plan, [second, first])
    assert not (base / "releases/stack" / second).exists() and (base / "releases/stack" / first / ".complete").exists()
    assert f"ha-ingestor-data-api:rel-{second}" not in images


def test_a_rollback_to_an_unknown_or_the_live_release(tmp_path, script):  # noqa: F811
    plan = full_plan(tmp_path)
    docker(script["release"].__globals__, {"ha-ingestor-data-api:latest": "sha256:one"})
    rid = script["record_release"](plan, META)
    script["rollback_to"](plan, rid, META)  # live already: nothing, no history line
    assert len(facts(plan["dir"])["history"]) == 1
    try:
        script["rollback_to"](plan, "0" * 12, META)
    except script["Failed"] as exc:
        assert "is not a kept, complete release" in str(exc)
    else:
        raise AssertionError("an unknown release was rolled back to")


def legacy_layout(base: Path, plan):
    """<dir>/live exactly as the script before release records wrote it (write_record)."""
    live = base / "live"
    (live / "files").mkdir(parents=True)
    live.chmod(0o700)
    saved = {}
    for i, path in enumerate(plan["compose_files"] + plan["env_files"]):
        name = f"{i:02d}-{Path(path).name}"
        (live / "files" / name).write_text(Path(path).read_text())
        saved[path] = name
    (live / "release.json").write_text(json.dumps({
        "source": "deploy", "project_directory": plan["project_directory"], "compose_files": plan["compose_files"],
        "env_file": plan["env_file"], "images": {"data-api": "ha-ingestor-data-api:latest"},
        "services": ["data-api", "influxdb"], "files": saved}))


def test_the_earlier_layout_is_adopted_on_the_first_run(tmp_path, script):  # noqa: F811
    """An operator's host: <dir>/live and `:rollback` tags. The new code makes it release
    <rid> of the series (live, a history line, `:rel-<rid>` on what runs), drops the old
    tag, and the next release keeps it as its rollback target; a second adoption does
    nothing."""
    plan = full_plan(tmp_path)
    base = Path(plan["dir"])
    legacy_layout(base, plan)
    images = {"ha-ingestor-data-api:latest": "sha256:live", "ha-ingestor-data-api:rollback": "sha256:older"}
    g = script["release"].__globals__
    calls = docker(g, images)
    rid = script["adopt_legacy_record"](plan, META)
    assert not (base / "live").exists() and (base / "releases/stack" / rid / ".complete").exists()
    assert (base / "stack").resolve() == (base / "releases/stack" / rid).resolve()
    record = json.loads((base / "stack/release.json").read_text())
    assert record["tags"] == {"data-api": f"ha-ingestor-data-api:rel-{rid}"} and record["source"] == "deploy"
    assert images[f"ha-ingestor-data-api:rel-{rid}"] == "sha256:live"
    assert ["docker", "rmi", "ha-ingestor-data-api:rollback"] in calls
    st = facts(base)
    assert [e["action"] for e in st["history"]] == ["adopt"] and st["history"][0]["commit"] == "abc123def456"
    assert script["adopt_legacy_record"](plan, META) is None  # once
    # the adopted record is the failed release's target (tag_live) and a kept release after the next
    assert script["tag_live"](plan) == {"data-api": f"ha-ingestor-data-api:rel-{rid}"}
    Path(plan["env_files"][1]).write_text("INFLUXDB_TOKEN=next\n")
    script["record_release"](plan, META)
    assert releases.rollback_target(facts(base), ["stack"], None)["components"] == {"stack": rid}
    # the deploy keeps no `*.previous` files once a record exists, in either layout
    assert (base / "stack/release.json").exists()


class Ops(FakeHost):
    log = PathFacts.log


def test_the_deploys_rollback_runs_the_script_as_the_release_unit(monkeypatch):
    monkeypatch.setattr(ingestor, "host", Ops({}))
    monkeypatch.setattr(ingestor, "release_meta", lambda: META)
    target = {"id": "f" * 12, "components": {"stack": "a" * 12}, "at": "now", "commit": "abc"}
    commands = list(ingestor.ingestor_rolled_back._inner(plan_path="/opt/x/release.json", script="/opt/x/bin/ingestor-release",
                                                         target=target, timeout_s=600))
    first = str(commands[0].get_raw_value())
    assert "systemd-run" in first and "ingestor-release" in first
    assert first.endswith(f"/opt/x/bin/ingestor-release rollback /opt/x/release.json {'a' * 12} "
                          f"'{json.dumps(META, sort_keys=True)}'")
    assert len(commands) == 1  # the script prunes after the rollback, in the same unit


def test_release_actions_are_checked_and_the_makefile_lists_ingestor():
    from tests.unit.test_ingestor_deploy import data

    try:
        ingestor.check_config(data(release_action="rolback"))
    except ingestor.ConfigError as exc:
        assert "release_action 'rolback' is not one of releases, rollback" in str(exc)
    else:
        raise AssertionError("a wrong release_action passed")
    makefile = (Path(ingestor.__file__).parent.parent / "Makefile").read_text()
    assert "ingestor" in next(line for line in makefile.splitlines() if line.startswith("RELEASE_DEPLOYS :="))


# ----------------------------------------------------------------------------- the token's shape (issue 12)


class Preflight(FakeHost):
    name = "ingestor-1"

    def noop(self, message):
        self.facts["noop"] = message


def preflight(monkeypatch, token):
    from tests.unit.test_ingestor_deploy import data
    from pyinfra.api import HiddenValue

    monkeypatch.setattr(ingestor, "host", Preflight({"DockerServerVersion": "24.0.7"}))
    monkeypatch.setattr(ingestor, "collect_problems", lambda **kwargs: [])
    monkeypatch.setattr(ingestor, "detected_cli", lambda: "docker compose")
    monkeypatch.setattr(ingestor, "override_cli_problem", lambda cli, version: None)
    ingestor.checked_preflight(data(ingestor_check_home_assistant=False), {"HOME_ASSISTANT_TOKEN": HiddenValue(token)})


def test_a_token_upstream_would_refuse_stops_the_preflight(monkeypatch):
    """websocket-ingestion (bbc4ab4 token_validator.py) refuses tokens shorter than 32 or
    longer than 300 characters or with other characters than [a-zA-Z0-9._-]: it would
    never connect, so the run stops before any change, naming the rule, not the token."""
    import pytest

    for token, rule in (("short-token-31-characters-xxxxx", "31 characters, shorter than 32"),
                        ("a" * 301, "301 characters, longer than 300"),
                        ("a" * 31 + " b", "characters other than letters")):
        with pytest.raises(ingestor.PreflightFailed, match=rule) as exc:
            preflight(monkeypatch, token)
        assert token not in str(exc.value) and "websocket-ingestion refuses it" in str(exc.value)
    preflight(monkeypatch, "a" * 32)  # upstream's own minimum passes
    preflight(monkeypatch, "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ4In0.abc-_def")  # a long-lived token (a JWT)


def test_the_deploy_adopts_the_earlier_record_once(monkeypatch):
    monkeypatch.setattr(ingestor, "release_meta", lambda: META)

    def commands(found):
        monkeypatch.setattr(ingestor, "host", PathFacts(dict.fromkeys(found, {"size": 1})))
        return [str(c.get_raw_value()) for c in ingestor.legacy_record_adopted._inner(
            base="/o", script="/o/bin/ingestor-release", plan_path="/o/release.json")]

    assert commands(["/o/live/release.json"]) == [
        f"/o/bin/ingestor-release adopt /o/release.json '{json.dumps(META, sort_keys=True)}'"]
    assert commands(["/o/live/release.json", "/o/stack/release.json"]) == []  # adopted already
    assert commands([]) == []  # a fresh host, or one released by this code only


def test_a_rollback_that_does_not_turn_healthy_puts_the_live_release_back(tmp_path, script):  # noqa: F811
    """The release brought back fails its gate: the live release's files and image run
    again, the live link and the history stay as they were, and the run fails."""
    plan = full_plan(tmp_path)
    g = script["release"].__globals__
    images = {"ha-ingestor-data-api:latest": "sha256:one"}
    calls = docker(g, images)
    first, second = two_releases(plan, script, images)
    env = Path(plan["env_files"][0])
    starts = []

    def start_in_order(plan, migrate_first=True, only=None):
        starts.append(images["ha-ingestor-data-api:latest"])
        if len(starts) == 1:
            raise script["Failed"]("not healthy after 1s: data-api: container health unhealthy")

    g["start_in_order"] = start_in_order
    try:
        script["rollback_to"](plan, first, META)
    except script["Failed"] as exc:
        assert "not healthy" in str(exc) and f"release {second} runs again" in str(exc)
    else:
        raise AssertionError("a failed rollback passed")
    assert starts == ["sha256:one", "sha256:two"]  # the first release tried, then the live one again
    assert env.read_text() == "INFLUXDB_TOKEN=second\n" and images["ha-ingestor-data-api:latest"] == "sha256:two"
    st = facts(plan["dir"])
    assert st["components"]["stack"]["current"] == second
    assert [e["action"] for e in st["history"]] == ["deploy", "deploy"]
    assert calls  # docker was asked (tags), never a prune
    assert not [c for c in calls if "prune" in c]
