"""The inputs digest a service was restarted with (facts/restarts.py), run for real with sh."""

from __future__ import annotations

import os
import subprocess

from facts.restarts import ServiceInputs, inputs_digest_command, record_command


def digest(paths) -> str:
    out = subprocess.run(["sh", "-c", inputs_digest_command(paths)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_digest_follows_content_links_and_missing_paths(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("v1")
    (tmp_path / "unit").write_text("[Service]")
    os.symlink("releases/a", tmp_path / "current")
    paths = [str(tmp_path / "unit"), str(tmp_path / "app"), str(tmp_path / "current"), str(tmp_path / "gone")]
    first = digest(paths)
    assert len(first) == 64 and first == digest(paths)
    (tmp_path / "app" / "main.py").write_text("v2")
    second = digest(paths)
    assert second != first
    os.remove(tmp_path / "current")
    os.symlink("releases/b", tmp_path / "current")
    assert digest(paths) != second
    (tmp_path / "gone").write_text("now here")
    assert digest(paths) not in (first, second)


def test_record_then_fact_reads_it(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    marker_dir = tmp_path / "markers"
    monkeypatch.setattr("facts.restarts.MARKER_DIR", str(marker_dir))
    fact = ServiceInputs()
    before = subprocess.run(["sh", "-c", fact.command("x.service", [str(tmp_path / "f")])],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert fact.process(before)["recorded"] is None and len(fact.process(before)["current"]) == 64
    subprocess.run(["sh", "-c", record_command("x.service", [str(tmp_path / "f")])], check=True)
    after = fact.process(subprocess.run(["sh", "-c", fact.command("x.service", [str(tmp_path / "f")])],
                                        capture_output=True, text=True, check=True).stdout.splitlines())
    assert after["recorded"] == after["current"] == fact.process(before)["current"]
    (tmp_path / "f").write_text("y")
    changed = fact.process(subprocess.run(["sh", "-c", fact.command("x.service", [str(tmp_path / "f")])],
                                          capture_output=True, text=True, check=True).stdout.splitlines())
    assert changed["recorded"] == after["recorded"] != changed["current"]


def test_process_without_output():
    assert ServiceInputs().process([]) == {"current": None, "recorded": None}
