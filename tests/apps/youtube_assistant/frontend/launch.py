"""The sample's `npm start`: a launcher process that runs a package.json script as a child.

Upstream (chris-jackson-actionqa/aqa-youtube-assistant at bd6e13d, frontend/package.json)
production runs `npm start` = `next start`: npm (the PID a PID file or systemd sees) runs
the script through `sh -c`, and the listening socket belongs to the child `next-server`,
not to npm. This launcher keeps that shape so the deploy's process-group handling (stop
the whole tree, no orphaned server) is exercised: `python3 launch.py start -- ARGS` runs
`sh -c "<scripts.start> ARGS"` (launcher -> sh -> server, like npm -> sh -> next-server). SIGTERM/SIGINT are passed to the child and, as npm does,
the launcher then exits 0 (a clean exit that `Restart=on-failure` would not restart).
"""

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: launch.py SCRIPT [-- ARGS]", file=sys.stderr)
        return 2
    script = json.loads((HERE / "package.json").read_text())["scripts"][argv[0]]
    extra = argv[2:] if argv[1:2] == ["--"] else argv[1:]
    command = " ".join([script, *map(shlex.quote, extra)])
    print(f"> {command}", flush=True)
    child = subprocess.Popen(["sh", "-c", command])
    stopping = []

    def forward(signum, frame):
        stopping.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    return 0 if stopping else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
