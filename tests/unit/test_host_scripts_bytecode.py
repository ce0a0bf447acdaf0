"""The host scripts that import the release records library leave no __pycache__ beside it
(they run as root, so Python would write one into /opt/infra/lib on every host)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SCRIPTS = ("opt/infra/bin/release-switch", "opt/ha-ingestor/bin/ingestor-release")


@pytest.mark.parametrize("script", SCRIPTS)
def test_importing_the_library_writes_no_bytecode(tmp_path, script):
    for path in (script, "opt/infra/lib/release_records.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(TEMPLATES / path, tmp_path / path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as on a host
    # no arguments: each script imports the library, then refuses to run
    proc = subprocess.run(["python3", str(tmp_path / script)], capture_output=True, text=True, timeout=30, env=env)
    assert "ModuleNotFoundError" not in proc.stderr and "ImportError" not in proc.stderr, proc.stderr
    assert not (tmp_path / "opt/infra/lib/__pycache__").exists()
