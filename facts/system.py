"""Capacity and ownership facts for preflight checks."""

from __future__ import annotations

import json
import shlex

from pyinfra.api import FactBase


def parse_df_free_mb(output: list[str]) -> int | None:
    """`df -Pm PATH` -> available MiB (4th column of the last line)."""
    rows = [line.split() for line in output if line.strip()]
    if len(rows) < 2 or len(rows[-1]) < 4:
        return None
    try:
        return int(rows[-1][3])
    except ValueError:
        return None


class FreeDiskMb(FactBase[int | None]):
    """Free MiB on the filesystem holding `path` (the nearest existing parent)."""

    def command(self, path: str = "/") -> str:
        quoted = shlex.quote(path)
        return f'p={quoted}; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; df -Pm "$p"'

    def process(self, output: list[str]) -> int | None:
        return parse_df_free_mb(output)


def parse_meminfo_available_mb(output: list[str]) -> int | None:
    for line in output:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return None


def parse_meminfo_total_mb(output: list[str]) -> int | None:
    for line in output:
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


class MemTotalMb(FactBase[int | None]):
    """Installed memory as the kernel sees it, MiB (MemTotal of /proc/meminfo)."""

    def command(self) -> str:
        return "cat /proc/meminfo"

    def process(self, output: list[str]) -> int | None:
        return parse_meminfo_total_mb(output)


class MemAvailableMb(FactBase[int | None]):
    """Memory available to new processes, MiB (MemAvailable of /proc/meminfo)."""

    def command(self) -> str:
        return "cat /proc/meminfo"

    def process(self, output: list[str]) -> int | None:
        return parse_meminfo_available_mb(output)


_LISTENER_UNITS = r"""
import json, re, subprocess
out = subprocess.run(["ss", "-H", "-tlnp"], capture_output=True, text=True).stdout
result = {}
for line in out.splitlines():
    parts = line.split()
    if len(parts) < 4:
        continue
    port = parts[3].rsplit(":", 1)[-1]
    units = result.setdefault(port, [])
    for pid in re.findall(r"pid=(\d+)", line):
        unit = "?"
        try:
            for cg in open(f"/proc/{pid}/cgroup"):
                m = re.search(r"/([^/]+\.(?:service|scope))$", cg.strip())
                if m:
                    unit = m.group(1)
                    break
        except OSError:
            pass
        if unit not in units:
            units.append(unit)
print(json.dumps(result))
"""


class ListenerUnits(FactBase[dict[int, list[str]]]):
    """TCP port -> systemd units whose processes listen on it ("?" when unknown).

    Lets preflight accept a port that is taken by the very service being deployed.
    """

    requires_command = "python3"

    def command(self) -> str:
        return f"python3 -c {shlex.quote(_LISTENER_UNITS)}"

    def process(self, output: list[str]) -> dict[int, list[str]]:
        raw = json.loads("\n".join(output) or "{}")
        return {int(port): units for port, units in raw.items() if port.isdigit()}

    @staticmethod
    def default() -> dict:
        return {}


def parse_python_version(output: list[str]) -> str | None:
    """`python3 --version` -> "3.11.2" (None when the output is not a version)."""
    for line in output:
        parts = line.split()
        if len(parts) == 2 and parts[0] == "Python":
            return parts[1]
    return None


class PythonVersion(FactBase[str | None]):
    """Version of the host's `python3` (None when there is none): venvs are built from it."""

    def command(self) -> str:
        return "python3 --version 2>&1 || true"

    def process(self, output: list[str]) -> str | None:
        return parse_python_version(output)
