"""`make history DEPLOY=x`: the deploy runs recorded on each of the system's hosts.

Reads the host's audit log (deploys/parts/deploy_lock.py) through `pyinfra exec`, and
prints one line per run, newest last: when, result, changed/failed, who, from, commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploys.parts.deploy_lock import host_command  # noqa: E402


def format_run(run: dict) -> str:
    counts = f"changed={run.get('changed', '?')} failed={run.get('failed', '?')}"
    commit = f"{run.get('commit')}{'+dirty' if run.get('dirty') else ''}"
    failed = f"  at: {run['failed_op']}" if run.get("failed_op") else ""
    return (f"{run.get('since', run.get('at', '?'))}  {run.get('deploy', '?'):<9} {run.get('result', '?'):<22} "
            f"{counts:<20} {run.get('who')}@{run.get('from')}  {commit}{failed}")


def main(argv: list[str]) -> int:
    deploy = argv[1] if len(argv) > 1 and argv[1] else None
    limit = int(argv[2]) if len(argv) > 2 else 20
    command = str(host_command("history", {"deploy": deploy, "limit": limit}).get_raw_value())
    env = dict(os.environ, PYINFRA_PROGRESS="off", **({"INFRA_SYSTEMS": deploy} if deploy else {}))
    proc = subprocess.run([sys.executable, "-m", "pyinfra", "inventory.py", "-y", "exec", "--", command],
                          cwd=REPO, env=env, capture_output=True, text=True)
    found = False
    for line in (proc.stdout + proc.stderr).splitlines():
        name, _, rest = line.strip().partition("] ")
        if not rest.startswith('{"ok"'):
            continue
        found = True
        print(f"{name.lstrip('[')}:")
        runs = json.loads(rest).get("runs", [])
        for run in runs:
            print("  " + format_run(run))
        if not runs:
            print("  (no recorded runs)")
    if not found:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
        return proc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
