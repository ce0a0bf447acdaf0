"""The Docker engine a host already has, and its daemon.json (read, never assumed).

Why: a host may run Docker's docker-ce or Debian's docker.io; installing the other one
makes apt swap the engine under the running containers. And daemon.json may carry the
operator's keys, which a deploy must keep (deploys/parts/docker_host.py merges into it).
"""

from __future__ import annotations

import json
import shlex

from pyinfra.api import FactBase
from typing_extensions import override

ENGINE_PACKAGES = ("docker-ce", "docker.io", "moby-engine", "docker-engine")

_ENGINE = r"""
echo engine-fact
for p in %s; do
    s=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$p" 2>/dev/null) || continue
    case "$s" in installed\ *) echo "package=$p ${s#installed }";; esac
done
command -v dockerd >/dev/null 2>&1 && echo dockerd=yes
systemctl cat docker.service >/dev/null 2>&1 && echo unit=yes
true
""" % " ".join(ENGINE_PACKAGES)


def parse_engine(output: list[str]) -> dict:
    """{"package": "docker-ce"|None, "version": str|None, "dockerd": bool, "installed": bool,
    "unit": bool} ("unit": a docker.service exists, which the Docker host part manages)."""
    package = version = None
    dockerd = unit = False
    for line in output:
        if line.startswith("package=") and package is None:
            package, _, version = line[len("package="):].partition(" ")
        elif line.strip() == "dockerd=yes":
            dockerd = True
        elif line.strip() == "unit=yes":
            unit = True
    return {"package": package, "version": version or None, "dockerd": dockerd,
            "installed": bool(package) or dockerd, "unit": unit}


class DockerEngine(FactBase[dict]):
    """The installed engine: its package (first of ENGINE_PACKAGES found) and whether a
    `dockerd` is on PATH (an engine installed outside apt counts as installed too)."""

    @override
    def command(self) -> str:
        return _ENGINE

    @staticmethod
    @override
    def default() -> dict:
        return {"package": None, "version": None, "dockerd": False, "installed": False, "unit": False}

    @override
    def process(self, output: list[str]) -> dict:
        return parse_engine(output)


def parse_daemon_json(output: list[str]) -> dict:
    """{"exists": bool, "config": dict|None, "error": str|None} from the fact's output."""
    if not output or output[0].strip() != "exists=yes":
        return {"exists": False, "config": {}, "error": None}
    text = "\n".join(output[1:]).strip()
    if not text:
        return {"exists": True, "config": {}, "error": None}
    try:
        config = json.loads(text)
    except ValueError as exc:
        return {"exists": True, "config": None, "error": f"not valid JSON ({exc})"}
    if not isinstance(config, dict):
        return {"exists": True, "config": None, "error": "not a JSON object"}
    return {"exists": True, "config": config, "error": None}


class DaemonJson(FactBase[dict]):
    """/etc/docker/daemon.json parsed: {"exists", "config" (dict, None if unreadable), "error"}."""

    @override
    def command(self, path: str = "/etc/docker/daemon.json") -> str:
        quoted = shlex.quote(path)
        return f"if [ -f {quoted} ]; then echo exists=yes; cat {quoted}; else echo exists=no; fi"

    @staticmethod
    @override
    def default() -> dict:
        return {"exists": False, "config": {}, "error": None}

    @override
    def process(self, output: list[str]) -> dict:
        return parse_daemon_json(output)
