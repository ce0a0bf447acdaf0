"""What a service runs with: a digest of its inputs now, and the one recorded at its last start.

A run that changes a service's code or config and dies before the restart (SIGKILL, an
SSH drop, a reboot) leaves files that no longer match the running process; the next run
sees nothing to change and would never restart it. The hardened service part records the
digest of the unit, the env file and the service's `restart_paths` each time it restarts
the service; this fact tells a mismatch, so the next run restarts it.
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

MARKER_DIR = "/var/lib/infra/restarts"


def marker_path(unit: str) -> str:
    return f"{MARKER_DIR}/{unit}.inputs"


def inputs_digest_command(paths: list[str] | tuple[str, ...]) -> str:
    """POSIX sh printing one sha256 over the paths: files by content, symlinks by target,
    directories by every file and link below them, a missing path as missing."""
    quoted = " ".join(shlex.quote(p) for p in paths)
    return (
        f"for p in {quoted}; do "
        'if [ -L "$p" ]; then printf "L %s %s\\n" "$p" "$(readlink "$p")"; '
        'elif [ -d "$p" ]; then find -P "$p" -type f -exec sha256sum {} + ; find -P "$p" -type l -printf "L %p %l\\n"; '
        'elif [ -e "$p" ]; then sha256sum "$p"; '
        'else printf "M %s\\n" "$p"; fi; '
        "done | LC_ALL=C sort | sha256sum | cut -c1-64"
    )


def record_command(unit: str, paths: list[str] | tuple[str, ...]) -> str:
    marker = marker_path(unit)
    return (f"mkdir -p {MARKER_DIR} && ( {inputs_digest_command(paths)} ) > {shlex.quote(marker + '.tmp')} "
            f"&& mv {shlex.quote(marker + '.tmp')} {shlex.quote(marker)}")


class ServiceInputs(FactBase[dict]):
    """`{"current": digest, "recorded": digest or None}` for a unit and its input paths."""

    def command(self, unit: str, paths: list[str]) -> str:
        marker = shlex.quote(marker_path(unit))
        return (f"echo current $( {inputs_digest_command(paths)} ); "
                f"if [ -f {marker} ]; then echo recorded $(cat {marker}); else echo recorded -; fi")

    def process(self, output: list[str]) -> dict:
        found: dict = {"current": None, "recorded": None}
        for line in output:
            key, _, value = line.strip().partition(" ")
            if key in found and value and value != "-":
                found[key] = value
        return found

    @staticmethod
    def default() -> dict:
        return {"current": None, "recorded": None}
