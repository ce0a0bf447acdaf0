"""Build the stand-in's wheels with the stdlib (no setuptools, no network).

    python -m tests.apps.music_assistant.build OUT_DIR VERSION [LABEL] [SCHEMA]

Writes two wheels to OUT_DIR, shaped like Music Assistant 2.3.0's: `mass_sample-VERSION`
(console script `mass`, `Requires-Python >=3.11`, its runtime only in the `[server]`
extra) and `mass_sample_runtime-1.0.0` (what that extra pulls in). LABEL (default
VERSION) is the package's VERSION, e.g. "broken-1.2" for a release that crashes after
migrating the database; SCHEMA is the library.db schema it migrates to (default 1).
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIST = "mass_sample"
RUNTIME = "mass_sample_runtime"
RUNTIME_VERSION = "1.0.0"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(out_dir: Path, dist: str, version: str, files: dict[str, bytes], metadata: str,
                 entry_points: str = "") -> Path:
    info = f"{dist}-{version}.dist-info"
    entries = dict(files)
    entries[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n" + metadata).encode()
    entries[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests-build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if entry_points:
        entries[f"{info}/entry_points.txt"] = entry_points.encode()
    record = [_record_line(name, data) for name, data in entries.items()] + [f"{info}/RECORD,,"]
    entries[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            entry = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            zf.writestr(entry, data)
    return wheel


def _package(name: str) -> dict[str, bytes]:
    return {f"{name}/{p.name}": p.read_bytes() for p in sorted((HERE / name).glob("*.py"))}


def build_runtime_wheel(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _write_wheel(out_dir, RUNTIME, RUNTIME_VERSION, _package(RUNTIME),
                        "Summary: stand-in for Music Assistant's [server] extra\nRequires-Python: >=3.11\n")


def build_wheel(out_dir: Path, version: str, label: str | None = None, schema: int = 1) -> Path:
    """The app wheel (and, beside it, the runtime wheel its `[server]` extra needs)."""
    out_dir = Path(out_dir)
    build_runtime_wheel(out_dir)
    files = _package(DIST)
    files[f"{DIST}/VERSION"] = f"{label or version} {int(schema)}\n".encode()
    metadata = (
        "Summary: Music Assistant stand-in for tests\nRequires-Python: >=3.11\n"
        f"Provides-Extra: server\nRequires-Dist: {RUNTIME}=={RUNTIME_VERSION} ; extra == \"server\"\n"
    )
    return _write_wheel(out_dir, DIST, version, files, metadata, "[console_scripts]\nmass = mass_sample.__main__:main\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    print(build_wheel(Path(args[0]), args[1], args[2] if len(args) > 2 else None, int(args[3]) if len(args) > 3 else 1))
