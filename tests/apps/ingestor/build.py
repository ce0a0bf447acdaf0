"""Build (once, cached by a hash of the recipe) the ha-ingestor stand-in images.

    python -m tests.apps.ingestor.build     # prints {"base": TAG, "influxdb": TAG}

No registry is reachable in tests, so:

* `ingestor-standin-base:<hash>`: busybox + python3.11 (with sqlite3) + alembic/SQLAlchemy
  (wheels cached in .cache/youtube-wheels) + a curl stand-in, from the harness's cached
  Debian 12 base. The sample checkout's Dockerfiles keep upstream's FROM lines: the e2e
  test loads this image into the host and tags it as each of UPSTREAM_BASES, so `compose
  build` works offline there.
* `ingestor-standin-influxdb:<hash>`: the InfluxDB stand-in (standins/influxd.py + influx).

The tag hashes the Dockerfile, every file copied in, the wheels and the base tag.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tests.apps.youtube_assistant.wheels import ensure_wheels
from tests.harness._util import docker, file_lock, log, timed
from tests.harness.image import ensure_image, image_exists

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "source"
HA_STANDIN = HERE / "standins" / "home_assistant.py"
# wheels the stand-in base needs (the cache also holds uvicorn & co.)
# upstream's base images (FROM lines at bbc4ab4) the stand-in base is tagged as on a test
# host, and InfluxDB's image (its compose file names it) for the InfluxDB stand-in
UPSTREAM_BASES = ("python:3.12-alpine", "python:3.11-alpine", "python:3.12-slim", "nginx:alpine")
UPSTREAM_INFLUXDB = "influxdb:2.7"
WHEELS = ("alembic", "SQLAlchemy", "mako", "markupsafe", "typing_extensions", "greenlet")


def _wheels() -> list[Path]:
    return sorted(w for w in ensure_wheels().glob("*.whl") if w.name.split("-")[0].lower() in {x.lower() for x in WHEELS})


def _build(tag: str, dockerfile: str, files: dict[str, Path]) -> str:
    if image_exists(tag):
        return tag
    with file_lock(f"build-{tag.split(':')[0]}"):
        if not image_exists(tag):
            with tempfile.TemporaryDirectory(prefix="ingestor-standin-") as ctx, timed(f"built {tag}"):
                for name, path in files.items():
                    (Path(ctx) / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, Path(ctx) / name)
                (Path(ctx) / "Dockerfile").write_text(dockerfile)
                log(f"building {tag} ...")
                docker("build", "-q", "--label", "infra-test.standin=ingestor", "-t", tag, ctx,
                       timeout=900, what=f"docker build of {tag}")
    return tag


def _tag(kind: str, dockerfile: str, files: dict[str, Path]) -> str:
    digest = hashlib.sha256(dockerfile.encode())
    for name, path in sorted(files.items()):
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return f"ingestor-standin-{kind}:{digest.hexdigest()[:12]}"


def ensure_standin_images() -> dict[str, str]:
    base_dockerfile = (HERE / "Dockerfile.base").read_text().replace("{base}", ensure_image("base"))
    base_files = {"rootfs.sh": HERE / "rootfs.sh", "curl": HERE / "standins" / "curl",
                  **{f"wheels/{w.name}": w for w in _wheels()}}
    base = _build(_tag("base", base_dockerfile, base_files), base_dockerfile, base_files)
    influx_dockerfile = (HERE / "Dockerfile.influxdb").read_text().replace("{standin_base}", base)
    influx_files = {"influxd.py": HERE / "standins" / "influxd.py", "influx": HERE / "standins" / "influx"}
    influx = _build(_tag("influxdb", influx_dockerfile, influx_files), influx_dockerfile, influx_files)
    return {"base": base, "influxdb": influx}


if __name__ == "__main__":
    json.dump(ensure_standin_images(), sys.stdout)
    print()
