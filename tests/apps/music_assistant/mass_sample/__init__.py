"""Stand-in for Music Assistant server 2.3.0 in tests (stdlib only).

Derived from music-assistant/server at tag 2.3.0, at every point the deploy touches:

- pyproject.toml: base dependencies only by default; the runtime (aiorun, ifaddr,
  zeroconf, ...) is the `[server]` extra. Here the extra is `mass-sample-runtime`
  (tests/apps/music_assistant/mass_sample_runtime), imported at the top of __main__ as
  MA imports aiorun, so a venv without the extra dies with ModuleNotFoundError.
  Entry point `mass = ...__main__:main`; `mass --config DIR` (music_assistant/__main__.py).
- server/server.py start order: interfaces over netlink (ifaddr/zeroconf; AF_NETLINK
  blocked -> OSError errno 97), settings.json (controllers/config.py: `core/<domain>/values`,
  settings.json.backup fallback, server_id added and saved later), library.db migration
  (controllers/music.py: `settings` table key `version`, library.db.backup before a
  migration), stream server (controllers/streams.py: `ffmpeg -version`; missing ffmpeg ->
  the start fails; major < 6 -> ERROR "FFMpeg version is too old" and it goes on; binds
  `core/streams/values/bind_ip` default 0.0.0.0, port 8097), webserver last
  (controllers/webserver.py: `core/webserver/values/bind_ip` default 0.0.0.0 = all IPv4
  and IPv6 addresses, port 8095; `/`, `/info` JSON with server_version, `/ws`).
- aiorun: an exception during start is logged (ERROR, traceback) and the process keeps
  running without listeners: systemd sees it "active".
- logging (music_assistant/__main__.py, colorlog): `... LEVEL (thread) [name] message` in ANSI
  colours on stderr (the journal keeps the colour codes, at info priority)
  and in DATA/musicassistant.log.

A VERSION label starting with "broken" migrates library.db to its schema, then exits 1
(a crash loop under Restart=always); "hang" migrates and then never opens a port.
"""

from importlib import resources

_LABEL = resources.files(__package__).joinpath("VERSION").read_text().split()
VERSION = _LABEL[0]
# library.db schema this release migrates to (MA's DB_SCHEMA_VERSION).
SCHEMA = int(_LABEL[1]) if len(_LABEL) > 1 else 1
