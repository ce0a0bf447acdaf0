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


def test_the_compose_image_record_writes_no_bytecode(tmp_path):
    """compose_releases' record (archon) imports the library in a `python3 -c` as root."""
    from deploys.parts import compose_releases, release_records
    from tests.unit.release_state import fake_docker_root

    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(TEMPLATES / "opt/infra/lib/release_records.py", lib)
    fake_docker_root(tmp_path, "#!/bin/sh\necho sha256:abc\n")
    script = compose_releases.record_images_script(str(tmp_path / "root"), "images", {"postgres": "archon-postgres"},
                                                   {"postgres": "postgres:15"}, {"by": "me"}, "deploy", None, 2)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    proc = subprocess.run(["sh", "-c", script.replace(release_records.LIB_DIR, str(lib))], capture_output=True,
                          text=True, timeout=30, env=env)
    assert proc.returncode == 0 and "is live and recorded" in proc.stdout, proc.stdout + proc.stderr
    assert not (lib / "__pycache__").exists()
