"""One run at a time per host, and a record of every run (who, from where, what, result).

`guard(system)` is the first line of a deploy. It takes the host's deploy lock before the
deploy reads any fact, so a second run waits (`deploy_lock_wait_s`) and then refuses,
naming who holds the lock, since when, and which deploy. The lock belongs to this run's
connection (see deploy_lock_host.py): whatever way a run ends, its lock dies with it, and
the next run records the dead one as interrupted. The run's result - changed and failed
counts, the failed operation - is appended to the host's audit log when its last
operation ends or its first unignored error happens; `make history DEPLOY=x` shows it.

No operation is added: lock and record are commands run beside the plan, so a no-op run
still reports 0 changes. `--dry` takes no lock; it warns when another run holds one.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import gevent
import gevent.lock
from pyinfra import host, logger
from pyinfra.api import StringCommand
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.api.state import BaseStateCallback
from pyinfra.context import state

from deploys.errors import PreflightFailed
from facts import prefetch

HOST_SCRIPT = (Path(__file__).with_name("deploy_lock_host.py")).read_text()
REPO = Path(__file__).resolve().parents[2]
RUN_ID = uuid.uuid4().hex[:12]
STARTED = time.time()
REFUSED_STATUS = 3  # the take's exit status when another run holds the lock


_REVISION_LOCK = gevent.lock.Semaphore()  # pyinfra loads the hosts' deploy code in greenlets


def git_revision(repo: Path = REPO) -> tuple[str | None, bool]:
    """The controller's checkout: commit and whether its tracked files differ from it. Once
    per run, not once per host: the hosts' greenlets wait for the first one's answer (a
    plain cache missed for every host that asked while git ran: two git processes each)."""
    with _REVISION_LOCK:
        return _git_revision(repo)


@functools.lru_cache(maxsize=None)
def _git_revision(repo: Path) -> tuple[str | None, bool]:
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False
    return commit, dirty


def operator() -> str:
    return os.environ.get("INFRA_OPERATOR") or getpass.getuser()


def host_command(action: str, payload: dict) -> StringCommand:
    return StringCommand("python3", "-c", shlex.quote(HOST_SCRIPT), action, shlex.quote(json.dumps(payload)))


def executor_of(target) -> dict:
    """The connector arguments (sudo, ...) the host's data sets."""
    arguments, _ = pop_global_arguments(state, target, {})
    return {k: v for k, v in arguments.items() if k in CONNECTOR_ARGUMENT_KEYS}


def run_host_script(target, action: str, payload: dict) -> dict:
    """Run the host script with the connector arguments (sudo, ...) the host's data sets."""
    _, output = target.run_shell_command(host_command(action, payload), print_output=False, **executor_of(target))
    return host_answer(target, output)


def host_answer(target, output) -> dict:
    """The host script's JSON line (the last one with "ok": a prefetch's line may follow it)."""
    for line in reversed(output.stdout_lines):
        if line.startswith('{"ok"'):
            return json.loads(line)
    error = " ".join(output.stderr_lines[-3:]) or "no output"
    raise PreflightFailed(f"deploy lock on {target.name}: the host script failed ({error})")


def take_then_run_script() -> str:
    """One interpreter for the take and the prefetch (a no-op apply is mostly host-side
    start-up costs): the lock's take, its JSON line, then, only when the lock is held, the
    prefetch host script's `run` with the arguments after the payload."""
    return "\n".join([
        "import json, sys",
        "lock = {'__name__': 'deploy_lock_host'}",
        f"exec(compile({HOST_SCRIPT!r}, 'deploy_lock_host', 'exec'), lock)",
        "result = lock['take'](json.loads(sys.argv[1]))",
        "print(json.dumps(result))",
        "sys.stdout.flush()",
        f"if not result.get('ok'): sys.exit({REFUSED_STATUS})",
        "sys.argv = sys.argv[:1] + sys.argv[2:]",
        f"exec(compile({prefetch.HOST_SCRIPT!r}, 'prefetch_host', 'exec'), {{'__name__': '__main__'}})",
    ])


TAKE_THEN_RUN = take_then_run_script()


def take_and_prefetch(target, system: str, payload: dict) -> dict:
    """Take the lock and, once it is held, prefetch the deploy's facts: ONE remote command
    and one python3 (refused: it exits REFUSED_STATUS after its JSON line, reading nothing)."""
    executor = prefetch.run_executor(state, target, system)
    if executor is None:  # no prefetch for this host (off, or already done in this run)
        return run_host_script(target, "take", payload)
    command = StringCommand("python3", "-c", shlex.quote(TAKE_THEN_RUN), shlex.quote(json.dumps(payload)),
                            *map(shlex.quote, prefetch.run_arguments(system)))
    sent = time.monotonic()
    ok, output = target.run_shell_command(command, print_output=False, **executor)
    result = host_answer(target, output)
    if result.get("ok"):  # the prefetch's clock was read after the lock's wait
        prefetch.seed_host(state, target, system, executor, ok, output, sent + float(result.get("waited_s", 0)))
    return result


def describe_holder(holder: dict) -> str:
    dirty = " (dirty)" if holder.get("dirty") else ""
    return (f"{holder.get('who')} from {holder.get('from')} since {holder.get('since')}, "
            f"deploy {holder.get('deploy')}, commit {holder.get('commit')}{dirty}")


def start_payload(system: str, wait_s: float, local: bool) -> dict:
    commit, dirty = git_revision()
    return {
        "run_id": RUN_ID, "deploy": system, "who": operator(), "from": socket.gethostname(),
        "commit": commit, "dirty": dirty, "wait_s": wait_s,
        "controller_pid": os.getpid() if local else None,
    }


def guard(system: str) -> None:
    """Take this host's deploy lock (or refuse, naming the holder) and audit the run."""
    if not host.data.get("deploy_lock", True):
        return
    dry = "--dry" in sys.argv
    local = host.connector_cls.__name__ == "LocalConnector"
    wait_s = 0 if dry else float(host.data.get("deploy_lock_wait_s", 30))
    if dry:
        return  # the plan is read-only and takes no lock
    result = take_and_prefetch(host._get_module(), system, start_payload(system, wait_s, local))
    if not result["ok"]:
        raise PreflightFailed(
            f"{host.name} is being deployed by another run ({describe_holder(result.get('holder') or {})}); "
            f"waited {wait_s:.0f}s (deploy_lock_wait_s). Nothing was changed.")
    if stale := result.get("stale"):
        logger.warning(f"{host.name}: took over the deploy lock of an interrupted run ({describe_holder(stale)})")
    _register(host._get_module(), system)  # the Host itself, not the context proxy


def guarded(system: str, main, data) -> None:
    """`guard(system)`, then the deploy's `main(data)`. A run refused while it prepares (a
    failed preflight, bad data) is recorded as refused and frees its lock at once, so the
    next run does not report it as interrupted."""
    guard(system)
    try:
        prefetch.prefetch(system)  # the facts the last run asked for, in one command
        main(data)
    except Exception as exc:
        target = host._get_module()
        if _RunRecorder.hosts.pop(target, None) is not None:
            payload = {"run_id": RUN_ID, "deploy": system, "result": "refused", "changed": 0, "failed": 0,
                       "error": str(exc)[:500], "duration_s": round(time.time() - STARTED, 1)}
            try:
                run_host_script(target, "finish", payload)
            except Exception as record_error:  # the refusal itself is what the operator must see
                logger.warning(f"{target.name}: could not record the refused run: {record_error}")
        raise


class _RunRecorder(BaseStateCallback):
    """Appends each guarded host's result to its audit log once its run has ended."""

    hosts: dict = {}

    @classmethod
    def record(cls, target, failed_op: str | None = None) -> None:
        system = cls.hosts.pop(target, None)
        if system is None:
            return
        changed = failed = 0
        for op_hash in state.get_op_order():
            meta = state.ops[target].get(op_hash)
            if meta is None or not meta.operation_meta.is_complete():
                continue
            changed += meta.operation_meta.did_change()
            failed += meta.operation_meta.did_error()
        failed += failed_op is not None  # the failing operation completes after this callback
        payload = {"run_id": RUN_ID, "deploy": system, "result": "failed" if failed_op else "success",
                   "changed": changed, "failed": failed, "failed_op": failed_op,
                   "duration_s": round(time.time() - STARTED, 1)}
        try:
            run_host_script(target, "finish", payload)
        except Exception as exc:  # the run's own result matters more than its record
            logger.warning(f"{target.name}: could not write the deploy record: {exc}")

    @staticmethod
    def operation_host_error(state, host, op_hash, retry_count=0, max_retries=0):  # noqa: ARG004
        arguments = state.get_op_meta(op_hash).global_arguments
        if arguments.get("_ignore_errors") or arguments.get("_continue_on_error"):
            return
        _RunRecorder.record(host, failed_op=", ".join(state.get_op_meta(op_hash).names))

    @staticmethod
    def operation_end(state, op_hash):
        order = state.get_op_order()
        if order and op_hash == order[-1]:
            _RunRecorder.record_all(list(_RunRecorder.hosts))

    @classmethod
    def record_all(cls, targets: list) -> None:
        """Every host's record (and unlock) at once, one greenlet each as pyinfra runs hosts:
        each is a round trip, so ten hosts one after the other waited ten of them."""
        gevent.joinall([gevent.spawn(cls.record, target) for target in targets], raise_error=True)


def _register(target, system: str) -> None:
    if not any(isinstance(h, _RunRecorder) for h in state.callback_handlers):
        state.add_callback_handler(_RunRecorder())
    _RunRecorder.hosts[target] = system
