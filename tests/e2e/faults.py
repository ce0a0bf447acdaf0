"""Fault injection for e2e tests: kill pyinfra at a chosen operation, seeded and printed.

    points = kill_points(total_ops, 2)              # seeded by $INFRA_FAULT_SEED (printed)
    run = run_until_operation("deploys/hello.py", n, limit=HOST, env=ENV)
    # run.killed: pyinfra got SIGKILL as it started operation n (pyinfra's own order)

A kill at operation n lands after operations 1..n-1 executed and before n's commands
finish: the re-run must converge and the run after it report 0 changes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

from deploys.settings import cli_data_value
from tests.e2e.runner import REPO

STARTING = "--> Starting operation:"


def fault_points(default: int) -> int:
    """Kill points per case: `default` (what the CI budget allows for that module), or
    $INFRA_FAULT_POINTS for a deeper run."""
    return max(1, int(os.environ.get("INFRA_FAULT_POINTS") or default))


def fault_seed() -> int:
    seed = int(os.environ.get("INFRA_FAULT_SEED") or random.SystemRandom().randrange(1, 10**6))
    print(f"[faults] seed {seed} (rerun with INFRA_FAULT_SEED={seed})", file=sys.stderr)
    return seed


def kill_points(total_ops: int, count: int, seed: int | None = None) -> list[int]:
    """`count` distinct operation numbers in 1..total_ops, in order; printed."""
    rng = random.Random(fault_seed() if seed is None else seed)
    points = sorted(rng.sample(range(1, total_ops + 1), min(count, total_ops)))
    print(f"[faults] kill points {points} of {total_ops} operations", file=sys.stderr)
    return points


@dataclass
class KilledRun:
    killed: bool
    returncode: int
    output: str
    operation: str | None  # the operation that was starting when the kill came


def planned_operations(deploy: str, *, limit: str, env: dict | None = None, data: dict | None = None) -> int:
    """How many operations pyinfra would run (`--dry --json`): the range of kill points."""
    return len(_plan(deploy, limit=limit, env=env, data=data))


def planned_changes(deploy: str, *, limit: str, env: dict | None = None, data: dict | None = None) -> list[int]:
    """Positions (1-based, pyinfra's order) of the operations that would (or may) change
    the host: kill points where a kill interrupts work rather than a check."""
    return [i for i, op in enumerate(_plan(deploy, limit=limit, env=env, data=data), 1)
            if op["hosts_with_change"] or op["hosts_with_conditional_change"]]


def kill_points_among(positions: list[int], count: int, seed: int | None = None) -> list[int]:
    """`count` distinct positions out of `positions`, in order; seeded and printed."""
    rng = random.Random(fault_seed() if seed is None else seed)
    points = sorted(rng.sample(positions, min(count, len(positions))))
    print(f"[faults] kill points {points} of the changing operations {positions}", file=sys.stderr)
    return points


def planned_position(deploy: str, contains: str, *, limit: str, env: dict | None = None, data: dict | None = None) -> int:
    """Position (1-based, pyinfra's order) of the first planned operation whose name holds
    `contains`: a kill point chosen by what the operation does."""
    for i, op in enumerate(_plan(deploy, limit=limit, env=env, data=data), 1):
        if contains in op["name"]:
            return i
    raise AssertionError(f"no planned operation named like {contains!r}")


def _plan(deploy: str, *, limit: str, env: dict | None, data: dict | None) -> list[dict]:
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", deploy, "--dry", "--json", "--limit", limit]
    for key, value in (data or {}).items():
        cmd += ["--data", f"{key}={cli_data_value(value)}"]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "DEPLOY_ENV": "test", "PYINFRA_PROGRESS": "off",
                                               **(env or {})}, capture_output=True, text=True, timeout=600)
    start = proc.stdout.find('{"plan"')
    assert start >= 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout[start:])["plan"]


def run_until_operation(deploy: str, n: int, *, limit: str, env: dict | None = None,
                        data: dict | None = None, then=None, timeout: float = 600, before_kill=None) -> KilledRun:
    """Run `pyinfra deploy`; when it starts operation `n`, call `then` (default: SIGKILL it;
    `before_kill`: called first, e.g. to wait until a host-side step has started)."""
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", deploy, "-y", "--limit", limit]
    for key, value in (data or {}).items():
        cmd += ["--data", f"{key}={cli_data_value(value)}"]
    full_env = {**os.environ, "DEPLOY_ENV": "test", "PYINFRA_PROGRESS": "off", **(env or {})}
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    lines, seen, operation = [], 0, None
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(STARTING):
                seen += 1
                if seen == n and operation is None:
                    operation = line[len(STARTING):].strip()
                    if before_kill:
                        before_kill()
                    (then or (lambda: os.killpg(proc.pid, signal.SIGKILL)))()
        proc.wait()
    finally:
        timer.cancel()
    return KilledRun(operation is not None, proc.returncode, "".join(lines), operation)
