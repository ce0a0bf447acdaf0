"""Shared by the unit tests of host-side release records (archon, hivesync): a bin/ with a
fake `docker`, and the Releases fact read from a releases root by its host script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from facts.releases import RELEASES_SCRIPT, Releases


def fake_docker_root(tmp_path: Path, script: str) -> Path:
    """tmp_path with bin/docker = `script` (put bin/ first on PATH)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/docker").write_text(script)
    (tmp_path / "bin/docker").chmod(0o755)
    return tmp_path


def releases_state(root: Path, component: str) -> dict:
    out = subprocess.run([sys.executable, "-c", RELEASES_SCRIPT, "state", str(root), component],
                         capture_output=True, text=True, check=True).stdout
    return Releases().process(out.splitlines())
