"""The state of an env file assembled on the host by deploys/parts/generated_env.py
(names only: secret values never leave the host)."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase
from typing_extensions import override


class GeneratedEnvStatus(FactBase[dict[str, Any] | None]):
    """The host-side env script in check mode: ``{"ok": bool, "missing": [...],
    "stale": bool}`` (names only, never values). None without python3."""

    requires_command = "python3"

    @override
    def command(self, script: str, spec: str) -> str:
        return f"python3 -c {shlex.quote(script)} check {shlex.quote(spec)}"

    @staticmethod
    @override
    def default() -> dict[str, Any] | None:
        return None

    @override
    def process(self, output: list[str]) -> dict[str, Any] | None:
        for line in reversed(output):
            if line.strip().startswith("{"):
                return json.loads(line)
        return None
