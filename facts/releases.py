"""
Facts for releases built beside the live one (deploys/parts/releases.py).

- ``Releases(root, components)`` -> for each component (space-separated names): the
  release the live link ``<root>/<name>`` points to (and the link's own text, which
  differs from ``releases/<name>/<id>`` for an install from before this layout), whether that path is still a plain
  directory (an install from before releases), and the releases under
  ``<root>/releases/<name>/`` (complete or not, with their ``release.json``); plus the
  deploy history (``<root>/releases/history.jsonl``, oldest first).

Read-only; every path may be missing (first deploy).
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand

from facts.procs import parse_json_line

# python3 -c SCRIPT ROOT NAMES -> {"components": {name: {...}}, "history": [...]}
RELEASES_SCRIPT = r"""
import json, os, sys
root, names = sys.argv[1], sys.argv[2].split()
def load(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
out = {"components": {}, "history": []}
for name in names:
    link, base = os.path.join(root, name), os.path.join(root, "releases", name)
    info = {"current": None, "legacy_dir": False, "releases": {}}
    if os.path.islink(link):
        target = os.readlink(link)
        info["current"] = os.path.basename(target.rstrip("/"))
        info["current_target"] = target
        info["current_complete"] = os.path.exists(os.path.join(link, ".complete"))
    elif os.path.isdir(link):
        info["legacy_dir"] = True
    if os.path.isdir(base):
        for rid in sorted(os.listdir(base)):
            path = os.path.join(base, rid)
            if os.path.isdir(path) and not os.path.islink(path):
                info["releases"][rid] = {
                    "complete": os.path.exists(os.path.join(path, ".complete")),
                    "meta": load(os.path.join(path, "release.json")) or {},
                }
    out["components"][name] = info
try:
    with open(os.path.join(root, "releases", "history.jsonl")) as handle:
        for line in handle:
            try:
                out["history"].append(json.loads(line))
            except ValueError:
                pass
except OSError:
    pass
print(json.dumps(out))
""".strip()


class Releases(FactBase[dict[str, Any]]):
    """
    Releases of ``components`` under ``root``:

    .. code:: python

        {"components": {"backend": {"current": "3f2a9c0d1e4b", "current_complete": True,
                                    "legacy_dir": False,
                                    "releases": {"3f2a9c0d1e4b": {"complete": True, "meta": {...}}}}},
         "history": [{"id": "...", "components": {"backend": "3f2a..."}, "at": "...", ...}]}
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"components": {}, "history": []}

    def requires_command(self, *args, **kwargs) -> str:
        return "python3"

    def command(self, root: str, components: str) -> StringCommand:
        return StringCommand("python3", "-c", QuoteString(RELEASES_SCRIPT), QuoteString(root), QuoteString(components))

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_json_line(output, "Releases")
