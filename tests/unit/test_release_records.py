"""The release records library (templates/opt/infra/lib/release_records.py): every writer
of a history line (the library on the host, deploys/parts/releases.py's shell line, the
`record` command hivesync runs) writes the same bytes, and both readers (the Releases
fact, the library) read each other's; a host deployed by main at 878e78f (music's
release-switch, ingestor-release, hivesync's record script: their files as those wrote
them) is read as it was: records, live links, history, listing, rollback target, prune."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploys.parts import releases
from deploys.parts.release_records import LIB, SOURCE, command, lib
from facts.releases import RELEASES_SCRIPT, Releases


def fact(root: Path, names: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", RELEASES_SCRIPT, "state", str(root), " ".join(names)], capture_output=True,
                         text=True, check=True)
    return Releases().process(out.stdout.splitlines())


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SOURCE), *args], capture_output=True, text=True, timeout=30)
    assert not check or proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_every_writer_writes_the_same_line_and_both_readers_read_them(tmp_path):
    entry = releases.history_entry({"stack": "a" * 12}, {"stack": "b" * 12}, "rollback",
                                   {"commit": "c0ffee", "dirty": True, "by": "op@h"}, "/var/backups/x")
    assert releases.history_entry is lib.history_entry  # one function on both sides
    lib.append_history(str(tmp_path), entry)  # the host scripts (release-switch, ingestor-release)
    subprocess.run(["sh", "-c", releases.history_line(str(tmp_path), entry)], check=True)  # the controller
    first, second = (tmp_path / "releases/history.jsonl").read_bytes().splitlines()
    assert first == second == json.dumps(entry, sort_keys=True).encode()
    (tmp_path / "releases/stack/" / ("a" * 12)).mkdir(parents=True)
    (tmp_path / "releases/stack" / ("a" * 12) / ".complete").touch()
    cli("record", str(tmp_path), "stack", "a" * 12, "--action", "deploy", "--meta", json.dumps({"by": "op@h"}))
    recorded = json.loads((tmp_path / "releases/history.jsonl").read_text().splitlines()[2])
    assert set(recorded) == set(entry) - {"commit", "dirty"} and recorded["id"] == entry["id"]
    read_by_fact, read_by_lib = fact(tmp_path, ["stack"])["history"], lib.read_history(str(tmp_path))
    assert read_by_fact == read_by_lib == [entry, entry, recorded]


def test_a_release_json_handed_back_as_meta_never_replaces_the_entrys_keys():
    entry = lib.history_entry({"backend": "r1"}, {"backend": None}, "rollback", {"id": "r1", "action": "x", "image": "i"})
    assert entry["id"] == lib.app_id({"backend": "r1"}) and entry["action"] == "rollback" and entry["image"] == "i"


# ----------------------------------------------------------------------------- a host deployed by main (878e78f)

# The lines and records exactly as main's writers left them: release-switch's history
# (json.dumps sort_keys), releases.release_built's release.json (printf, sort_keys, one
# line), ingestor-release's release.json (json.dump indent=1, its own key order),
# hivesync's record script (meta + image_id, sort_keys; its history via printf).
MUSIC = {"root": "music", "name": "app", "rids": ["1d1d1d1d1d1d", "2e2e2e2e2e2e", "3f3f3f3f3f3f"], "mode": 0o755,
         "previous": 0}  # deploy 1d, deploy 2e, rollback to 1d, deploy 3f: back means 1d
INGESTOR = {"root": "ingestor", "name": "stack", "rids": ["4a4a4a4a4a4a", "5b5b5b5b5b5b"], "mode": 0o700, "previous": 0}
HIVESYNC = {"root": "hivesync", "name": "backend", "rids": ["6c6c6c6c6c6c", "7d7d7d7d7d7d"], "mode": 0o755, "previous": 0}


def music_record(rid: str, i: int) -> str:
    return (f'{{"built_at": "2026-11-3{i}T10:00:00+0000", "by": "op", "commit": "abc{i}", "component": "app", '
            f'"dirty": false, "id": "{rid}"}}\n')


def ingestor_record(rid: str, i: int) -> str:
    return json.dumps({"source": "deploy", "project_directory": "/opt/ha-ingestor/src", "compose_files": ["/c.yml"],
                       "env_file": "/opt/ha-ingestor/env/compose.env", "images": {"data-api": "ha-ingestor-data-api:latest"},
                       "services": ["data-api"], "source_revision": None, "id": rid, "component": "stack",
                       "built_at": f"2026-11-3{i}T10:00:00+0000", "commit": f"def{i}", "dirty": False, "by": "op@ingestor-1",
                       "files": {"/c.yml": "00-c.yml"}, "digests": {"/c.yml": "d" * 64},
                       "image_ids": {"data-api": f"sha256:{i}"}, "tags": {"data-api": f"ha-ingestor-data-api:rel-{rid}"}},
                      indent=1)


def hivesync_record(rid: str, i: int) -> str:
    return json.dumps({"by": "op", "commit": f"fed{i}", "dirty": False, "image": f"hivesync-backend:src-{rid}",
                       "image_id": f"sha256:h{i}", "infra_commit": "878e78f", "infra_dirty": False, "ref": "main",
                       "source": "/src/HiveSync"}, sort_keys=True) + "\n"


def history_line(series: dict, rid: str, before: str | None, action: str, i: int, **extra) -> str:
    name = series["name"]
    entry = {"action": action, "at": f"2026-11-3{i}T10:00:05+0000", "backup": extra.pop("backup", None),
             "by": "op", "commit": f"c{i}", "components": {name: rid}, "dirty": False,
             "from": releases.app_id({name: before}) if before else None, "id": releases.app_id({name: rid}), **extra}
    return json.dumps(entry, sort_keys=True) + "\n"


def main_host(tmp_path: Path) -> Path:
    writers = {"music": music_record, "ingestor": ingestor_record, "hivesync": hivesync_record}
    for series in (MUSIC, INGESTOR, HIVESYNC):
        root = tmp_path / series["root"]
        for i, rid in enumerate(series["rids"]):
            path = root / "releases" / series["name"] / rid
            path.mkdir(parents=True)
            path.chmod(series["mode"])
            (path / "release.json").write_text(writers[series["root"]](rid, i))
            (path / ".complete").touch()
        (root / series["name"]).symlink_to(f"releases/{series['name']}/{series['rids'][-1]}")
    a, b, c = MUSIC["rids"]
    (tmp_path / "music/releases/history.jsonl").write_text(
        history_line(MUSIC, a, None, "deploy", 0) + history_line(MUSIC, b, a, "deploy", 1, backup="/var/backups/m1")
        + history_line(MUSIC, a, b, "rollback", 1) + history_line(MUSIC, c, a, "deploy", 2))
    d, e = INGESTOR["rids"]
    (tmp_path / "ingestor/releases/history.jsonl").write_text(
        history_line(INGESTOR, d, None, "adopt", 0) + history_line(INGESTOR, e, d, "deploy", 1, backup="/b/ingestor-1"))
    (tmp_path / "ingestor/releases/stack" / d / "files").mkdir()
    f, g = HIVESYNC["rids"]
    (tmp_path / "hivesync/releases/history.jsonl").write_text(
        history_line(HIVESYNC, f, None, "deploy", 0, image=f"hivesync-backend:src-{f}")
        + history_line(HIVESYNC, g, f, "deploy", 1, image=f"hivesync-backend:src-{g}") + "\n")  # a blank line too
    return tmp_path


@pytest.mark.parametrize("series", [MUSIC, INGESTOR, HIVESYNC], ids=lambda s: s["root"])
def test_a_host_deployed_by_main_is_read_as_it_was(tmp_path, series):
    root, names = main_host(tmp_path) / series["root"], [series["name"]]
    st = lib.state_of(str(root), names)
    assert st == fact(root, names)  # the fact (the library run as `state` over SSH) reads the same
    comp = st["components"][series["name"]]
    assert comp["current"] == series["rids"][-1] and comp["current_complete"] and not comp["legacy_dir"]
    assert sorted(comp["releases"]) == series["rids"] and all(r["complete"] for r in comp["releases"].values())
    assert comp["releases"][series["rids"][0]]["meta"]  # every writer's release.json parses
    assert lib.unrecorded_live(st, names) is None  # the history ends with the live release
    live_id = releases.app_id({series["name"]: series["rids"][-1]})
    lines = releases.report_lines(st, names, series["root"])
    assert lines[0].endswith(f"* = live {live_id}):") and lines[1].startswith(f" * {live_id}")
    assert len(lines) == 1 + len(series["rids"]) and "[pruned]" not in "".join(lines)
    target = releases.rollback_target(st, names, None)
    assert target["components"] == {series["name"]: series["rids"][series["previous"]]}
    assert lib.prune_plan(st, names, 1) == {series["name"]: series["rids"][:-1]}  # keep 1: all but the live one
    assert cli("list", str(root), series["name"], series["root"]).stdout.splitlines() == lines


def test_the_next_release_on_a_host_deployed_by_main_goes_on_in_the_same_files(tmp_path):
    """A new release recorded by the library beside main's records: the old lines and
    records still read, the new line after them, the link switched; the prune keeps N."""
    root = main_host(tmp_path) / "hivesync"
    before = (root / "releases/history.jsonl").read_text()
    cli("record", str(root), "backend", "8e8e8e8e8e8e", "--meta", json.dumps({"by": "new"}),
        "--release", json.dumps({"image": "hivesync-backend:src-8e8e8e8e8e8e"}), "--field", "image_id=sha256:new")
    assert (root / "releases/history.jsonl").read_text().startswith(before)
    st = fact(root, ["backend"])
    assert st["components"]["backend"]["current"] == "8e8e8e8e8e8e" and os.readlink(root / "backend") == \
        "releases/backend/8e8e8e8e8e8e"
    assert [e["action"] for e in st["history"]] == ["deploy", "deploy", "deploy"]
    assert st["history"][-1]["from"] == releases.app_id({"backend": HIVESYNC["rids"][-1]})
    assert st["components"]["backend"]["releases"]["8e8e8e8e8e8e"]["meta"]["image_id"] == "sha256:new"
    out = cli("prune", str(root), "backend", "--keep", "2").stdout
    assert out == f"pruned backend releases {HIVESYNC['rids'][0]} (keeping 2)\n"
    assert sorted(lib.state_of(str(root), ["backend"])["components"]["backend"]["releases"]) == \
        [HIVESYNC["rids"][1], "8e8e8e8e8e8e"]
    # an incomplete release is never switched to
    (root / "releases/backend/9f9f9f9f9f9f").mkdir()
    bad = cli("record", str(root), "backend", "9f9f9f9f9f9f", check=False)
    assert bad.returncode == 1 and "not complete: not switched" in bad.stderr
    assert os.readlink(root / "backend") == "releases/backend/8e8e8e8e8e8e"


def test_the_ingestor_script_reads_a_host_deployed_by_main(tmp_path):
    import runpy

    from tests.unit.test_ingestor_deploy import SCRIPT

    script = runpy.run_path(str(SCRIPT))
    plan = {"dir": str(main_host(tmp_path) / "ingestor")}
    assert script["live_rid"](plan) == INGESTOR["rids"][-1]
    assert script["read_record"](script["live_dir"](plan))["tags"] == {
        "data-api": f"ha-ingestor-data-api:rel-{INGESTOR['rids'][-1]}"}


def test_a_probe_drops_releases_that_cannot_run_again_never_the_live_one(tmp_path):
    root = main_host(tmp_path) / "hivesync"
    cli("prune", str(root), "backend", "--probe", "test {image_id} = sha256:h1")  # only the live one "exists"
    assert sorted(os.listdir(root / "releases/backend")) == [HIVESYNC["rids"][1]]
    cli("prune", str(root), "backend", "--probe", "false")
    assert sorted(os.listdir(root / "releases/backend")) == [HIVESYNC["rids"][1]]


def test_the_installed_path_and_the_command_line():
    assert LIB == "/opt/infra/lib/release_records.py" and SOURCE.is_file()
    assert command("prune", "/opt/x y", "backend") == "python3 /opt/infra/lib/release_records.py prune '/opt/x y' backend"
    assert cli("nonsense", check=False).returncode == 2
