"""The sample's "production build": src/ -> dist/, with NEXT_PUBLIC_API_URL baked in
(as Next.js does for NEXT_PUBLIC_* at build time). Fails without it.

`--install` plays `npm ci`: it (re)creates node_modules/ from package.json (upstream's
node_modules is 679 MB, so the deploy must hard-link it, not copy it, and reinstall only
when package*.json changed).
"""

import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def render(api_url: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((HERE / "src").rglob("*")):
        if path.is_file():
            target = out / path.relative_to(HERE / "src")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text().replace("__NEXT_PUBLIC_API_URL__", api_url))


def install() -> int:
    modules = HERE / "node_modules"
    shutil.rmtree(modules, ignore_errors=True)  # as npm ci does: new files, never rewritten in place
    dep = modules / "sample-dep"
    dep.mkdir(parents=True)
    (dep / "package.json").write_text(json.dumps({"name": "sample-dep", "installed_by": os.getpid()}))
    (dep / "index.js").write_text("module.exports = 42;\n")
    print("installed node_modules/sample-dep")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--install"]:
        return install()
    api_url = os.environ.get("NEXT_PUBLIC_API_URL")
    if not api_url:
        print("build.py: NEXT_PUBLIC_API_URL is not set", file=sys.stderr)
        return 1
    dist = HERE / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    render(api_url, dist)
    (dist / "build.json").write_text(json.dumps({"api_url": api_url, "pid": os.getpid()}))
    print(f"built dist/ for {api_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
