"""Wheels for the sample backend, downloaded once on the controller (PyPI reachable
there) and cached in .cache/; the tests upload them so the test host installs with
`pip install --no-index --find-links` and needs no network."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
REQUIREMENTS = [HERE / "backend" / "requirements.txt", HERE / "backend" / "requirements-dev.txt"]
# The test hosts run Debian 12: CPython 3.11 on x86_64 (the controller's architecture).
TARGET = ["--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]


def ensure_wheels(cache: Path | None = None) -> Path:
    """A directory holding every wheel requirements(-dev).txt need (downloaded once)."""
    key = hashlib.sha256(b"".join(p.read_bytes() for p in REQUIREMENTS) + " ".join(TARGET).encode()).hexdigest()[:12]
    out = (cache or REPO / ".cache" / "youtube-wheels") / key
    if (out / ".complete").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
         *TARGET, "-d", str(out), "-r", str(REQUIREMENTS[1])],
        check=True, cwd=REQUIREMENTS[1].parent, capture_output=True, text=True, timeout=300,
    )
    (out / ".complete").write_text("ok\n")
    return out


if __name__ == "__main__":
    print(ensure_wheels())
