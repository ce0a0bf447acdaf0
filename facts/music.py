"""What Music Assistant 2.3 needs from a host, read before anything changes.

- ffmpeg: MA runs `ffmpeg -version` at start; without it the stream server (and so the
  webserver after it) never starts; below major 6 it logs "FFMpeg version is too old"
  and playback may fail (server/helpers/ffmpeg.py MINIMAL_FFMPEG_VERSION = 6).
- python3 >= 3.11 (pyproject requires-python).
- settings.json (MA's own settings; `core/<controller>/values/bind_ip` sets where its
  webserver and stream server listen).
"""

from __future__ import annotations

import json
import re
import shlex

from pyinfra.api import FactBase

# ffmpeg major in each release's archive, for hosts whose apt lists are still empty.
KNOWN_FFMPEG = {("debian", "11"): 4, ("debian", "12"): 5, ("debian", "13"): 7,
                ("ubuntu", "22.04"): 4, ("ubuntu", "24.04"): 6, ("ubuntu", "24.10"): 7, ("ubuntu", "25.04"): 7}

_TOOLS = r"""
echo "python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
echo "ffmpeg=$(ffmpeg -version 2>/dev/null | head -n 1)"
echo "candidate=$(LC_ALL=C apt-cache policy ffmpeg 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
. /etc/os-release 2>/dev/null; echo "os=${ID:-}:${VERSION_ID:-}"
"""


def ffmpeg_major(text: str | None) -> int | None:
    """5 from "ffmpeg version 5.1.6-0+deb12u1 ..." or from apt's "7:5.1.6-0+deb12u1"."""
    if not text:
        return None
    match = re.search(r"ffmpeg version n?(\d+)\.", text) or re.match(r"^(?:\d+:)?(\d+)\.", text.strip())
    return int(match.group(1)) if match else None


def parse_tools(output: list[str]) -> dict:
    raw = dict(line.split("=", 1) for line in output if "=" in line)
    os_id, _, os_version = raw.get("os", ":").partition(":")
    candidate = raw.get("candidate", "").strip()
    return {
        "python": raw.get("python") or None,
        "ffmpeg_installed": ffmpeg_major(raw.get("ffmpeg")),
        "ffmpeg_line": raw.get("ffmpeg") or None,
        "ffmpeg_candidate": None if candidate in ("", "(none)") else candidate,
        "apt_knows_ffmpeg": None if candidate == "" else candidate != "(none)",
        "os": (os_id, os_version),
    }


def ffmpeg_problem(tools: dict, min_major: int) -> str | None:
    """Why the host's ffmpeg (installed, else what apt would install) will not do."""
    installed = tools.get("ffmpeg_installed")
    if installed is not None:
        source, major = f"installed {tools.get('ffmpeg_line', '').split(' Copyright')[0]}", installed
    elif tools.get("ffmpeg_candidate"):
        source, major = f"apt candidate {tools['ffmpeg_candidate']}", ffmpeg_major(tools["ffmpeg_candidate"])
    elif tools.get("apt_knows_ffmpeg") is False:
        return "ffmpeg is not installed and apt has no ffmpeg package (Music Assistant needs it to start)"
    elif tuple(tools.get("os", ())) in KNOWN_FFMPEG:
        os_id, version = tools["os"]
        source, major = f"{os_id} {version}'s archive", KNOWN_FFMPEG[(os_id, version)]
    else:
        return None  # unknown here; checked again right after the install
    if major is None or major < min_major:
        return (f"ffmpeg {major}.x ({source}) is older than {min_major}, the minimum Music Assistant "
                f"supports (it logs 'FFMpeg version is too old'); use a release with ffmpeg >= {min_major} "
                f"(Debian 13, Ubuntu 24.04) or set music_ffmpeg_min_major lower knowingly")
    return None


def python_problem(tools: dict, minimum=(3, 11)) -> str | None:
    version = tools.get("python")
    if not version:
        return "python3 is missing"
    if tuple(int(p) for p in version.split(".")) < minimum:
        return f"python3 {version} is older than {'.'.join(map(str, minimum))} (Music Assistant requires-python)"
    return None


class MusicHostTools(FactBase[dict]):
    """python3 version, ffmpeg installed / apt candidate, os-release id:version."""

    def command(self) -> str:
        return _TOOLS

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict:
        return parse_tools(output)


# Prints {"exists": bool, "core": {...}} or {"error": "..."}; falls back to .backup as MA does.
_SETTINGS = r"""
import json, os, sys
path = sys.argv[1]
for name in (path, path + ".backup"):
    if os.path.isfile(name):
        try:
            data = json.load(open(name, encoding="utf-8"))
        except ValueError as exc:
            print(json.dumps({"error": "%s is not valid JSON: %s" % (name, exc)})); break
        core = data.get("core") if isinstance(data, dict) else None
        print(json.dumps({"exists": True, "from": name, "core": core if isinstance(core, dict) else {}})); break
else:
    print(json.dumps({"exists": False, "core": {}}))
"""


def core_value(settings: dict, domain: str, key: str):
    entry = (settings.get("core") or {}).get(domain) or {}
    return (entry.get("values") or {}).get(key) if isinstance(entry, dict) else None


class MusicAssistantSettings(FactBase[dict]):
    """The `core` section of MA's settings.json (or its .backup), or an error."""

    requires_command = "python3"

    def command(self, path: str) -> str:
        return f"python3 -c {shlex.quote(_SETTINGS)} {shlex.quote(path)}"

    @staticmethod
    def default() -> dict:
        return {"exists": False, "core": {}}

    def process(self, output: list[str]) -> dict:
        return json.loads("\n".join(output) or "{}")
