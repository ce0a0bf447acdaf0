"""Build (once, cached by a hash of the recipe) the images of the HiveSync tests.

    python -m tests.apps.hivesync.build     # prints {"backend": TAG, "broken": TAG, ...}

No registry is reachable in tests: the stack's images are replaced (through test data) by
local images built FROM the harness's cached Debian 12 base:

* `hivesync-sample-backend:<hash>`: the sample backend on a busybox + python3 rootfs (backend/: upstream
  c5680a2's root routes, /health, create_all, no Alembic; see backend/app.py);
* `hivesync-sample-backend-broken:<hash>`: the same, adding a table and failing /health (rollback);
* `hivesync-standin-redis:<hash>`: Debian's redis-server (busybox rootfs);
* `hivesync-standin-postgres:<hash>`: Docker's official postgres image as the plan's stack uses
  it (Debian's PostgreSQL 15; the Archon tests' entrypoint without Supabase's init scripts).
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
RECIPES = {
    "backend": ("Dockerfile.backend", ["../archon/rootfs.sh", "slim.sh", "backend"]),
    "broken": ("Dockerfile.broken", []),
    "redis": ("Dockerfile.redis", ["../archon/rootfs.sh", "slim.sh", "redis-entrypoint.sh"]),
    "postgres": ("Dockerfile.postgres", ["../archon/rootfs.sh", "../archon/standin-postgres", "pg_hba.conf"]),
}
NAMES = {"backend": "hivesync-sample-backend", "broken": "hivesync-sample-backend-broken",
         "redis": "hivesync-standin-redis", "postgres": "hivesync-standin-postgres"}


def _files(names: list[str]) -> list[tuple[Path, str]]:
    """(file, name in the build context); files from elsewhere (../archon) go to the top."""
    found = []
    for name in names:
        path = (HERE / name).resolve()
        if path.is_dir():
            found += [(p, p.relative_to(HERE).as_posix()) for p in sorted(path.rglob("*"))
                      if p.is_file() and "__pycache__" not in p.parts]
        else:
            found.append((path, path.relative_to(HERE).as_posix() if HERE in path.parents else path.name))
    return found


def _build(kind: str, substitutions: dict[str, str]) -> str:
    dockerfile_name, inputs = RECIPES[kind]
    dockerfile = (HERE / dockerfile_name).read_text()
    for key, value in substitutions.items():
        dockerfile = dockerfile.replace("{" + key + "}", value)
    digest = hashlib.sha256(dockerfile.encode())
    for path, rel in _files(inputs):
        digest.update(rel.encode() + b"\0" + path.read_bytes())
    tag = f"{NAMES[kind]}:{digest.hexdigest()[:12]}"
    if image_exists(tag):
        return tag
    with file_lock(f"build-hivesync-{kind}"):
        if not image_exists(tag):
            with tempfile.TemporaryDirectory(prefix="hivesync-") as ctx, timed(f"built {tag}"):
                for path, rel in _files(inputs):
                    target = Path(ctx) / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
                (Path(ctx) / "Dockerfile").write_text(dockerfile)
                log(f"building {tag} ...")
                docker("build", "-q", "--label", "infra-test.standin=hivesync", "-t", tag, ctx,
                       timeout=900, what=f"docker build of {tag}")
    return tag


def ensure_images() -> dict[str, str]:
    base = ensure_image("base")
    backend = _build("backend", {"base": base})
    return {
        "backend": backend,
        "broken": _build("broken", {"backend": backend}),
        "redis": _build("redis", {"base": base}),
        "postgres": _build("postgres", {"base": base}),
    }


if __name__ == "__main__":
    json.dump(ensure_images(), sys.stdout)
    print()
