"""deploys/parts/releases.py: the history stays consistent with the live links (issue 15,
item 2). A run killed after its link switch but before its history line (reproduced here
by a start hook that dies the way a killed process does) left that release out of
`make releases`; the listing now shows it and the next switch records it first."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra.api import FunctionCommand, StringCommand

from deploys.parts import releases
from facts.releases import RELEASES_SCRIPT, Releases
from deploys.parts.releases import Component, Switch, app_id, report_lines, rollback_target, unrecorded_live
from tests.unit.test_releases import NAMES, LocalHost, entry, fact, history, link, make_release


class Killed(BaseException):
    """What the switch sees when pyinfra is SIGKILLed: nothing after it runs."""


def built(root: Path, name: str, rid: str, **meta) -> None:
    path = make_release(root, name, rid)
    (path / "release.json").write_text(json.dumps({"id": rid, "component": name, **meta}))


def cut_off_switch(tmp_path: Path) -> None:
    """b1/f1 live and recorded; a deploy of b2 killed right after its link switch."""
    built(tmp_path, "backend", "b1")
    built(tmp_path, "frontend", "f1")
    built(tmp_path, "backend", "b2", commit="c2c2c2c2c2c2c2", dirty=False, by="jo@pc", built_at="2026-12-01T11:00:00+0000")
    link(tmp_path, "backend", "b1")
    link(tmp_path, "frontend", "f1")
    history(tmp_path, entry("b1", "f1", commit="c1"))

    def start(host_):
        raise Killed

    with pytest.raises(Killed):
        releases._switch(None, LocalHost(tmp_path), str(tmp_path), NAMES,
                         [Component("backend", "b2", start=start), Component("frontend", "f1")], None, Switch(), 3, None)


def test_a_switch_cut_off_before_its_history_line_is_found_listed_and_recorded(tmp_path):
    cut_off_switch(tmp_path)
    st = fact(tmp_path)
    assert st["components"]["backend"]["current"] == "b2" and len(st["history"]) == 1  # the state the kill left
    missing = unrecorded_live(st, NAMES)
    live = app_id({"backend": "b2", "frontend": "f1"})
    assert missing["id"] == live and missing["action"] == "cut-off" and missing["from"] == st["history"][0]["id"]
    assert (missing["commit"], missing["by"]) == ("c2c2c2c2c2c2c2", "jo@pc")  # from the release's release.json
    lines = report_lines(st, NAMES)
    assert lines[1].startswith(f" * {live}") and "cut-off" in lines[1] and "commit c2c2c2c2c2c2  by jo@pc" in lines[1]
    assert rollback_target(st, NAMES, None)["components"] == {"backend": "b1", "frontend": "f1"}
    subprocess.run(["sh", "-c", releases.history_line(str(tmp_path), missing)], check=True)
    st = fact(tmp_path)
    assert st["history"][-1]["id"] == live and unrecorded_live(st, NAMES) is None
    assert report_lines(st, NAMES)[1].startswith(f" * {live}")


def test_nothing_is_unrecorded_when_the_history_ends_with_the_live_release(tmp_path):
    assert unrecorded_live(fact(tmp_path), NAMES) is None  # nothing deployed
    built(tmp_path, "backend", "b1")
    built(tmp_path, "backend", "b2")
    built(tmp_path, "frontend", "f1")
    link(tmp_path, "backend", "b1")
    link(tmp_path, "frontend", "f1")
    history(tmp_path, entry("b1", "f1"), entry("b2", "f1"), entry("b1", "f1", action="rollback"))
    assert unrecorded_live(fact(tmp_path), NAMES) is None  # a rollback's line names the live one
    make_release(tmp_path, "backend", "b3", complete=False)
    link(tmp_path, "backend", "b3")  # not a complete release: nothing to record
    assert unrecorded_live(fact(tmp_path), NAMES) is None
    (tmp_path / "backend").unlink()
    (tmp_path / "backend").symlink_to("/elsewhere/b9")  # a link of another layout
    assert unrecorded_live(fact(tmp_path), NAMES) is None


def test_an_install_with_links_but_no_history_is_recorded_once(tmp_path):
    built(tmp_path, "backend", "b1", commit="c1")
    built(tmp_path, "frontend", "f1")
    link(tmp_path, "backend", "b1")
    link(tmp_path, "frontend", "f1")
    missing = unrecorded_live(fact(tmp_path), NAMES)
    assert missing["from"] is None and missing["commit"] == "c1"


def run_op(monkeypatch, tmp_path: Path, components: list[Component]) -> list:
    """The commands releases_switched yields while planning (pyinfra's first pass)."""
    logs: list[str] = []
    monkeypatch.setattr(releases, "read", lambda root, names: fact(tmp_path))
    monkeypatch.setattr(releases, "host", SimpleNamespace(noop=logs.append, log=logs.append))
    monkeypatch.setattr(releases, "state", SimpleNamespace(is_executing=False))
    commands = list(releases.releases_switched._inner(root=str(tmp_path), names=NAMES, components=components))
    return commands, logs


def test_the_next_switch_records_the_cut_off_release_first(monkeypatch, tmp_path):
    cut_off_switch(tmp_path)
    # the next deploy wants what is live: the history line is its only change
    commands, logs = run_op(monkeypatch, tmp_path, [Component("backend", "b2"), Component("frontend", "f1")])
    assert len(commands) == 1 and isinstance(commands[0], StringCommand)
    assert "history.jsonl" in commands[0].get_raw_value() and "cut-off" in commands[0].get_raw_value()
    assert any("is live but not in the history" in line for line in logs)
    # a rollback to b1: recorded first, then switched
    commands, _ = run_op(monkeypatch, tmp_path, [Component("backend", "b1"), Component("frontend", "f1")])
    assert isinstance(commands[0], StringCommand) and isinstance(commands[1], FunctionCommand)
    subprocess.run(["sh", "-c", commands[0].get_raw_value()], check=True)
    commands, logs = run_op(monkeypatch, tmp_path, [Component("backend", "b2"), Component("frontend", "f1")])
    assert commands == [] and any("is live" in line for line in logs)  # consistent: no change


def two_series(tmp_path: Path) -> list[releases.Series]:
    """Two series (as music's two apps), each with two kept releases, the newer live."""
    out = []
    for title, name in (("App", "app"), ("Auth", "auth")):
        root = tmp_path / name
        for rid in (f"{name}1", f"{name}2"):
            built(root, name, rid)
        link(root, name, f"{name}2")
        history(root, *({"id": app_id({name: r}), "components": {name: r}, "action": "deploy"} for r in (f"{name}1", f"{name}2")))
        out.append(releases.Series(title, str(root), (name,)))
    return out


def test_release_action_lists_every_series_and_rolls_back_in_the_one_named(monkeypatch, tmp_path):
    series = two_series(tmp_path)
    monkeypatch.setattr(releases, "read", fact_of)
    listed, back = [], []
    monkeypatch.setattr(releases, "releases_report", lambda **kw: listed.append((kw["name"], kw["root"])))
    assert releases.release_action(None, series, None, lambda s, t: back.append(t)) is False  # a normal run
    assert releases.release_action("releases", series, None, back.append) is True
    assert [name for name, _ in listed] == ["App releases", "Auth releases"] and back == []
    assert releases.release_action("rollback", series, None, lambda s, t: back.append((s.title, t["components"])))
    assert back == [("App", {"app": "app1"})]  # no TO: the first series' previous release
    auth1 = app_id({"auth": "auth1"})
    releases.release_action("rollback", series, auth1[:7], lambda s, t: back.append((s.title, t["components"])))
    assert back[-1] == ("Auth", {"auth": "auth1"})
    with pytest.raises(releases.ConfigError, match=r"App: rollback: no single kept release matches 'zzz'.*; Auth: rollback"):
        releases.release_action("rollback", series, "zzz", back.append)


def fact_of(root: str, names: list[str]) -> dict:
    out = subprocess.run(["python3", "-c", RELEASES_SCRIPT, "state", root, " ".join(names)], capture_output=True, text=True, check=True)
    return Releases().process(out.stdout.splitlines())


def test_history_entry_has_the_fields_make_releases_reads():
    entry = releases.history_entry({"app": "a2"}, {"app": "a1"}, "deploy", {"commit": "c", "dirty": False, "by": "jo@pc"}, "/b/x")
    assert entry["id"] == app_id({"app": "a2"}) and entry["from"] == app_id({"app": "a1"}) and entry["backup"] == "/b/x"
    assert {"components", "action", "at", "commit", "dirty", "by"} <= set(entry)
    assert releases.history_entry({"app": "a1"}, {"app": None}, "deploy")["from"] is None
