"""Build the sample's wheel with the stdlib (no setuptools, no network).

    python -m tests.apps.music_assistant.build OUT_DIR VERSION [LABEL]

VERSION is the wheel's (PEP 440) version; LABEL (default: VERSION) is written to the
package's VERSION file, e.g. "broken-1.2" for a release that refuses to start.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIST = "mass_sample"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(out_dir: Path, version: str, label: str | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = f"{DIST}-{version}.dist-info"
    entries: dict[str, bytes] = {}
    for path in sorted((HERE / DIST).glob("*.py")):
        entries[f"{DIST}/{path.name}"] = path.read_bytes()
    entries[f"{DIST}/VERSION"] = f"{label or version}\n".encode()
    entries[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {version}\n"
        "Summary: Music Assistant stand-in for tests\n"
    ).encode()
    entries[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests-build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries[f"{info}/entry_points.txt"] = b"[console_scripts]\nmass = mass_sample.__main__:main\n"
    record = [_record_line(name, data) for name, data in entries.items()] + [f"{info}/RECORD,,"]
    entries[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{DIST}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            info_entry = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info_entry.external_attr = 0o644 << 16
            zf.writestr(info_entry, data)
    return wheel


if __name__ == "__main__":
    print(build_wheel(Path(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
