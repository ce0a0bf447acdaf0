"""
Facts for releases built beside the live one (deploys/parts/releases.py).

- ``Releases(root, components)`` -> for each component (space-separated names): the
  release the live link ``<root>/<name>`` points to (and the link's own text, which
  differs from ``releases/<name>/<id>`` for an install from before this layout), whether that path is still a plain
  directory (an install from before releases), and the releases under
  ``<root>/releases/<name>/`` (complete or not, with their ``release.json``); plus the
  deploy history (``<root>/releases/history.jsonl``, oldest first).

Read-only; every path may be missing (first deploy). The reading is the release records
library's (templates/opt/infra/lib/release_records.py `state_of`).
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand

from deploys.templating import TEMPLATES
from facts.procs import parse_json_line

# python3 -c SCRIPT state ROOT NAMES -> {"components": {name: {...}}, "history": [...]}: the release
# records library itself (its `state` command), so the fact reads the layout as the host
# scripts do, before the library is installed too (a first deploy)
RELEASES_SCRIPT = (TEMPLATES / "opt/infra/lib/release_records.py").read_text()


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
        return StringCommand("python3", "-c", QuoteString(RELEASES_SCRIPT), "state", QuoteString(root),
                             QuoteString(components))

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_json_line(output, "Releases")
