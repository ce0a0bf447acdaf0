"""Drift check: exit 0 when a deploy would change nothing, 2 when it would.

pyinfra's `--dry` always exits 0; its `--dry --json` plan lists, per operation, the
hosts that would change. This wraps it for cron/CI:

    python tools/drift.py deploys/music.py [extra pyinfra args]

Exit codes: 0 in sync, 2 drift (operations listed on stdout), 1 pyinfra failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pending_changes(plan: list[dict]) -> list[tuple[str, list[str]]]:
    """(operation name, hosts) for every operation that would change a host."""
    return [(op["name"], op["hosts_with_change"]) for op in plan if op.get("hosts_with_change")]


def parse_plan(stdout: str) -> list[dict]:
    """The plan from `pyinfra --dry --json` stdout (the last JSON document printed)."""
    start = stdout.find('{"plan"')
    if start < 0:
        raise ValueError("no JSON plan in pyinfra output")
    return json.loads(stdout[start:])["plan"]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 1
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", *argv, "--dry", "--json"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return 1
    try:
        changes = pending_changes(parse_plan(proc.stdout))
    except (ValueError, KeyError) as exc:
        sys.stderr.write(proc.stderr)
        print(f"drift: cannot read pyinfra's plan: {exc}", file=sys.stderr)
        return 1
    if not changes:
        print("drift: in sync (0 pending changes)")
        return 0
    print(f"drift: {len(changes)} operation(s) would change the hosts:")
    for name, hosts in changes:
        print(f"  - {name}: {', '.join(hosts)}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
