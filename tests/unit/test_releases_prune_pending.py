"""prune_plan (deploys/parts/releases.py and templates/opt/infra/bin/release-switch) never
deletes a release built but never switched to that is newer than the live one: it was
built for a switch still to come (a run cut off between its build and its switch, or a
failed switch and the next deploy). Older never-switched ones and incomplete ones go."""

from __future__ import annotations

import json
from pathlib import Path

from deploys.parts import releases
from tests.unit.test_release_switch_script import load_script
from tests.unit.test_releases import NAMES, entry, fact, history, link

SCRIPT = load_script()


def built(root: Path, name: str, rid: str, at: str | None, complete: bool = True) -> None:
    path = root / "releases" / name / rid
    path.mkdir(parents=True)
    (path / "release.json").write_text(json.dumps({"id": rid, **({"built_at": at} if at else {})}))
    if complete:
        (path / ".complete").touch()


def tree(tmp_path: Path) -> Path:
    for rid, at in (("b1", "2026-12-01T10:00:00+0000"), ("b2", "2026-12-01T11:00:00+0000"),
                    ("b3", "2026-12-01T12:00:00+0000")):
        built(tmp_path, "backend", rid, at)
    built(tmp_path, "backend", "b0", "2026-12-01T09:00:00+0000")  # never switched, older than live
    built(tmp_path, "backend", "b9", "2026-12-01T13:00:00+0000")  # never switched, newer: pending
    built(tmp_path, "backend", "b8", "2026-12-01T13:30:00+0000", complete=False)  # a failed build
    built(tmp_path, "backend", "b7", None)  # never switched, no built_at: cannot be shown older
    built(tmp_path, "frontend", "f1", "2026-12-01T10:00:00+0000")
    history(tmp_path, entry("b1", "f1"), entry("b2", "f1"), entry("b3", "f1"))
    link(tmp_path, "backend", "b3")
    link(tmp_path, "frontend", "f1")
    return tmp_path


def test_a_newer_release_never_switched_to_is_kept_older_and_incomplete_ones_go(tmp_path):
    st = fact(tree(tmp_path))
    plan = releases.prune_plan(st, NAMES, keep=1)
    assert plan == {"backend": ["b0", "b1", "b2", "b8"], "frontend": []}
    assert "b9" not in plan["backend"] and "b7" not in plan["backend"]


def test_the_host_side_switch_prunes_the_same(tmp_path):
    root = tree(tmp_path)
    assert SCRIPT.prune_plan(SCRIPT.state_of(str(root), NAMES), NAMES, 1) == releases.prune_plan(fact(root), NAMES, 1)


def test_a_release_that_was_live_once_is_not_pending_however_new(tmp_path):
    root = tree(tmp_path)
    history(root, entry("b9", "f1"), entry("b3", "f1"))  # b9 was live, then rolled back from
    assert "b9" in releases.prune_plan(fact(root), NAMES, keep=1)["backend"]
