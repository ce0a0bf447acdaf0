"""Run pyinfra against the disposable hosts the way an operator would (the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deploys.settings import cli_data_value

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    results: dict | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def changed(self) -> list[str]:
        """Names of operations that changed a host.

        Raises when pyinfra printed no results (a failed or dry run), so an assertion
        like `run.changed == []` can never pass vacuously.
        """
        if self.results is None:
            raise AssertionError(f"pyinfra printed no results (rc={self.returncode}):\n{self.output[-3000:]}")
        ops = self.results.get("operations", [])
        return [op["name"] for op in ops if op["success"]]

    def did(self, operation: str) -> bool:
        """True when an operation of that name (ignoring its deploy prefix) changed a host."""
        return any(name == operation or name.endswith(f"| {operation}") for name in self.changed)

    @property
    def failed(self) -> list[str]:
        ops = (self.results or {}).get("operations", [])
        return [op["name"] for op in ops if op["error"]]


def pyinfra(
    *args: str,
    limit: str | None = None,
    env: dict | None = None,
    data: dict | None = None,
    cwd: Path = REPO,
    timeout: int = 900,
    json_output: bool = True,
) -> Run:
    """`pyinfra inventory.py ARGS` with DEPLOY_ENV=test; `-y --json` unless told otherwise."""
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", *args]
    if json_output and "--dry" not in args:
        cmd += ["-y", "--json"]
    elif json_output:
        cmd += ["--json"]
    if limit:
        cmd += ["--limit", limit]
    for key, value in (data or {}).items():
        cmd += ["--data", f"{key}={cli_data_value(value)}"]
    full_env = {**os.environ, "DEPLOY_ENV": "test", "PYINFRA_PROGRESS": "off", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    results = None
    start = proc.stdout.find('{"plan"')
    if start >= 0:
        try:
            results = json.loads(proc.stdout[start:]).get("results")
        except json.JSONDecodeError:
            results = None
    return Run(proc.returncode, proc.stdout, proc.stderr, results)


def apply(deploy: str, **kwargs) -> Run:
    """Apply a deploy; fail the test with pyinfra's output if it fails."""
    run = pyinfra(deploy, **kwargs)
    assert run.returncode == 0, f"pyinfra {deploy} failed:\n{run.output[-6000:]}"
    return run
