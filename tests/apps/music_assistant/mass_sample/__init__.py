"""Stand-in for Music Assistant in tests (stdlib only).

Serves what a deploy touches: HTTP on 127.0.0.1:8095 (`/` and `/health` JSON, with the
version), a WebSocket endpoint at `/ws` (RFC 6455 handshake, echoes text frames), and
a data dir it writes to at start. A VERSION starting with "broken" refuses to start, so
tests can exercise the automatic rollback.
"""

from importlib import resources

VERSION = resources.files(__package__).joinpath("VERSION").read_text().strip()
