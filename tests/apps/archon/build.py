"""Build (once, cached by a hash of the recipe) the stand-in images of the Archon tests.

    python -m tests.apps.archon.build          # prints {"http": TAG, "postgres": TAG}

No registry is reachable in tests, so the stack's images are replaced (through test
data) by two local images built FROM the harness's cached Debian 12 base:

* `archon-standin-http:<hash>`: one sample HTTP service for kong, rest, studio, meta and
  the archon-* services (it listens on all the plan's container ports; see
  standin_http.py), plus shims for the commands their healthchecks call;
* `archon-standin-postgres:<hash>`: Debian 13's PostgreSQL 17 + pgvector (FROM the trixie
  base: bookworm has no pgvector), a real database.

The tag hashes the Dockerfile, every file copied in and the base image tag, so a recipe
change builds a new image and an unchanged one costs one `docker image inspect`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tests.harness._util import docker, file_lock, log, timed
from tests.harness.image import ensure_image, image_exists

HERE = Path(__file__).resolve().parent
FILES = {
    "http": ("rootfs.sh", "standin_http.py", "standin-shim"),
    "postgres": ("rootfs.sh", "standin-postgres", "standin-migrate.sh", "standin-initial-schema.sql",
                 "standin-post-setup.sql", "standin-pg_hba.conf", "standin-pg_ident.conf"),
}
KINDS = tuple(FILES)
BASE = {"http": "base", "postgres": "trixie"}  # harness image variants


def _dockerfile(kind: str, base: str) -> str:
    return (HERE / f"Dockerfile.{kind}").read_text().replace("{base}", base)


def image_tag(kind: str, base: str) -> str:
    digest = hashlib.sha256(_dockerfile(kind, base).encode())
    for name in FILES[kind]:
        digest.update(name.encode() + b"\0" + (HERE / name).read_bytes())
    return f"archon-standin-{kind}:{digest.hexdigest()[:12]}"


def ensure_standin_image(kind: str) -> str:
    base = ensure_image(BASE[kind])
    tag = image_tag(kind, base)
    if image_exists(tag):
        return tag
    with file_lock(f"build-archon-standin-{kind}"):
        if not image_exists(tag):
            with tempfile.TemporaryDirectory(prefix="archon-standin-") as ctx, timed(f"built {tag}"):
                for name in FILES[kind]:
                    shutil.copy2(HERE / name, Path(ctx) / name)
                (Path(ctx) / "Dockerfile").write_text(_dockerfile(kind, base))
                log(f"building {tag} from {base} ...")
                docker("build", "-q", "--label", "infra-test.standin=archon", "-t", tag, ctx,
                       timeout=900, what=f"docker build of {tag}")
    return tag


def ensure_standin_images() -> dict[str, str]:
    return {kind: ensure_standin_image(kind) for kind in KINDS}


if __name__ == "__main__":
    json.dump(ensure_standin_images(), sys.stdout)
    print()
