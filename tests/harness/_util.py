"""Small shared helpers: paths, logging with timings, bounded subprocess calls.

Everything the harness runs goes through `run()` so that every external call has a
timeout and a failure message that names the command and shows its stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
# Keys, state and the generated inventory (git-ignored; the repo's inventory.py reads it).
HOSTS_DIR = Path(os.environ.get("INFRA_HOSTS_DIR", REPO_ROOT / ".hosts")).resolve()
# `make demo`'s own cluster and state (secret, sample wheel), apart from `make hosts-up`'s.
DEMO_DIR = Path(os.environ.get("INFRA_DEMO_DIR", REPO_ROOT / ".hosts" / "demo")).resolve()
# Build scratch space, engine log, locks (git-ignored).
CACHE_DIR = Path(os.environ.get("INFRA_HARNESS_CACHE", REPO_ROOT / ".cache" / "harness")).resolve()

LABEL = "infra-test"  # every container/network of a run carries infra-test=<run_id>


class HarnessError(RuntimeError):
    """A harness step failed; the message says which step and why."""


def log(msg: str) -> None:
    """Progress goes to stderr so stdout stays clean for machine-readable output."""
    print(f"[harness] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    """Print how long a stage took: the brief asks for visible stage timings."""
    start = time.monotonic()
    yield
    log(f"{what} in {time.monotonic() - start:.1f}s")


def run(
    args: Sequence[str],
    *,
    timeout: float = 120,
    check: bool = True,
    input: str | bytes | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; raise HarnessError naming it on failure.

    Output is captured as text. `what` is a human description used in the error.
    """
    text_input = input.decode() if isinstance(input, bytes) else input
    try:
        proc = subprocess.run(
            list(args),
            input=text_input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{what or args[0]}: timed out after {timeout:.0f}s: {_cmd(args)}") from exc
    except FileNotFoundError as exc:
        raise HarnessError(f"{what or args[0]}: command not found: {args[0]}") from exc
    if check and proc.returncode != 0:
        raise HarnessError(
            f"{what or args[0]} failed (exit {proc.returncode}): {_cmd(args)}\n"
            f"{_tail(proc.stderr or proc.stdout)}"
        )
    return proc


def run_with_progress(args: Sequence[str], *, what: str, timeout: float,
                      step: Callable[[str], str | None], every: float = 10.0) -> None:
    """Run a long command, logging its steps instead of minutes of silence.

    `step(line)` names the step an output line starts (e.g. "Retrieving"), or None. A line
    is logged at each new step and at most every `every` seconds within one, with the
    elapsed time; the failure message carries the output's tail.
    """
    start = time.monotonic()
    try:
        proc = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace")
    except FileNotFoundError as exc:
        raise HarnessError(f"{what}: command not found: {args[0]}") from exc
    tail: list[str] = []
    current, last_log = None, 0.0
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-25:]
            now = time.monotonic() - start
            name = step(line)
            if name and name != current or now - last_log >= every:
                current = name or current
                log(f"{what}: {line[:100]}  ({now:.0f}s)")
                last_log = now
            if now > timeout:
                proc.kill()
                raise HarnessError(f"{what}: timed out after {timeout:.0f}s: {_cmd(args)}")
    finally:
        returncode = proc.wait()
    if returncode != 0:
        raise HarnessError(f"{what} failed (exit {returncode}): {_cmd(args)}\n" + "\n".join(tail))


def _cmd(args: Sequence[str]) -> str:
    text = " ".join(str(a) for a in args)
    return text if len(text) < 300 else text[:300] + " ..."


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def wait_for(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.25,
    what: str,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll `check` until it returns a truthy value or `timeout` passes.

    `on_timeout` may return diagnostics (logs, journal) appended to the error.
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - remembered for the error message
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"\nlast error: {last_exc}" if last_exc else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


@contextlib.contextmanager
def file_lock(name: str) -> Iterator[None]:
    """Serialise work (engine start, image builds) between concurrent processes."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def docker(*args: str, timeout: float = 120, check: bool = True, input: str | None = None,
           what: str | None = None) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` through `run()`."""
    return run(["docker", *args], timeout=timeout, check=check, input=input,
               what=what or f"docker {args[0]}")
