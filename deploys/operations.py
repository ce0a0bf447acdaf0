"""Custom operations that report "no change" when the host is already right.

pyinfra's `server.shell`/`python.call` always count as a change; these check a fact
first and yield nothing when there is nothing to do, so a second apply shows 0 changes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from io import BytesIO
from posixpath import basename

from pyinfra import host
from pyinfra.api import FileUploadCommand, HiddenValue, QuoteString, StringCommand, operation
from pyinfra.context import state
from pyinfra.facts.files import File, FileContents, Sha256File
from facts import prefetch


def _raw(content: str | HiddenValue) -> str:
    return content.unmask() if isinstance(content, HiddenValue) else content


@operation()
def secret_file(dest: str, content: str | HiddenValue, user="root", group="root", mode="600"):
    """Write a file holding secrets without ever printing or diffing its content.

    `files.put` would show the old and new content under `--diff`, and SFTP creates new
    files 0644 before the chmod. Here the target (and, under sudo, the upload's temp
    file in the login user's home) is created 0600 first, so the secret is never
    readable by others, not even for a moment; the comparison is by SHA-256.
    """
    raw = _raw(content).encode()
    wanted_sum = hashlib.sha256(raw).hexdigest()
    info = host.get_fact(File, path=dest)
    target = QuoteString(dest)
    if not info:
        yield StringCommand("install", "-m", mode, "-o", user, "-g", group, "/dev/null", target)
    if host.get_fact(Sha256File, path=dest) != wanted_sum:
        host.log(f"Will write {dest} (secret content not shown)")
        args = host.current_op_global_arguments or {}
        temp = None
        if args.get("_sudo") or args.get("_su_user"):
            temp = f".infra-upload-{basename(dest)}-{wanted_sum[:8]}"
            yield StringCommand("install", "-m", "600", "/dev/null", QuoteString(temp), _sudo=False)
        yield FileUploadCommand(BytesIO(raw), dest, remote_temp_filename=temp)
    if info and (str(info.get("mode")) != mode.lstrip("0") or info.get("user") != user or info.get("group") != group):
        yield StringCommand("chown", f"{user}:{group}", target)
        yield StringCommand("chmod", mode, target)
    elif info:
        host.noop(f"{dest} is up to date")


def poll(check: Callable[[], tuple[bool, str]], timeout_s: float, interval_s: float) -> tuple[bool, str]:
    """Call `check` until it says ok or `timeout_s` passed; the last (ok, observed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with prefetch.live():  # a poll must see the host change
            ok, observed = check()
        if ok or time.monotonic() >= deadline:
            return ok, observed
        time.sleep(interval_s)


def poll_gate(check: Callable[[], tuple[bool, str]], description: str, timeout_s: float, interval_s: float) -> str | None:
    """The opening every health gate shares: None when there is nothing to fail (a dry run,
    or `check` turned ok in time; the noop says which), else the failure message."""
    if not state.is_executing:
        host.noop(f"{description}: checked when the deploy runs")
        return None
    ok, observed = poll(check, timeout_s, interval_s)
    if ok:
        host.noop(f"{description}: {observed}")
        return None
    return f"{description}: not healthy after {timeout_s:g}s; last observed: {observed}"


def fail_with(message: str) -> StringCommand:
    """A command that fails with `message` on stderr: it fails this host only, and pyinfra
    prints the message, so the reason reaches the operator."""
    return StringCommand("echo", QuoteString(message), ">&2", "&&", "false")


@operation(is_idempotent=True)
def wait_until(
    check: Callable[[], tuple[bool, str]],
    description: str,
    timeout_s: float = 60,
    interval_s: float = 2,
):
    """Health gate: wait (bounded) until `check()` says ok; change nothing.

    `check` returns (ok, observed) and runs on the host at execution time (facts read
    inside an operation see the host after the earlier operations). On timeout the
    operation fails with the last observed status. In a dry run nothing is checked.
    """
    if (message := poll_gate(check, description, timeout_s, interval_s)) is not None:
        yield fail_with(message)


def recorded(path: str) -> str | None:
    """The first line of a record file an operation keeps (a digest), or None: the fact
    behind "do it again only when the digest changed"."""
    lines = host.get_fact(FileContents, path=path)
    return lines[0].strip() if lines else None


def lines_logged(lines: list[str], noop: str = "status reported"):
    """The body of a status operation: each line logged, nothing changed. Use as
    `yield from lines_logged(lines)` in an @operation (it yields nothing)."""
    for line in lines:
        host.log(line)
    host.noop(noop)
    return
    yield  # pragma: no cover  (a generator that yields nothing)
