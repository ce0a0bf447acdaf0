"""Fewer SSH round trips: one command prefetches the facts a deploy will ask for.

pyinfra 3.10 runs one remote command per fact and keeps no cache, so a no-op apply of
music made 78 round trips. Here, per host:

- `prefetch(system)` (called by deploy_lock.guarded, after the lock) runs every fact
  command the last run of `system` asked for in ONE remote command (facts/prefetch_host.py,
  a few at a time) and seeds a cache with their output;
- a fact whose command, connector arguments included, is in the cache is answered from it:
  pyinfra's own fact code (`_get_fact`: command, `requires_command` guard, `process`,
  `default`) runs unchanged; only the transport is replaced. Only prefetched answers with
  exit status 0 are used; a fact read from the host is not kept (a loop waiting for the
  host to change must see each answer);
- any command, upload, rsync or Python callback of an operation (or any other command
  that is not a fact) drops the host's whole cache first: after a change every fact is
  read from the host again, so a change made within the run is never hidden. A no-op run
  changes nothing and is answered almost entirely from the prefetch;
- facts asked inside a health poll (`live()`, used by deploys.operations.poll) and the
  probes in `VOLATILE` always go to the host, but not one by one: each poll of an
  operation starts with ONE command that runs, now, every fact command the same
  operation's poll asked for in the last run (in parallel on the host); the poll's facts
  are answered from that reading, each once (the next poll reads again). A fact that was
  not in it is read from the host as before, and learned for the next run. The prefetch's
  command takes a first reading of every poll command too: it answers the first poll of
  each operation in a run that has changed nothing since (a no-op's gates cost no command;
  what they judge was read in this run, under its lock, and nothing has run since); after
  any change, or from an operation's second poll on, polls read the host;
- the host's clock (`server.Date`, asked by every `apt.update(cache_time=...)` and by file
  time stamps) is read by the prefetch command itself; a later ask gets that reading plus
  the time passed since it was sent, measured on the controller's monotonic clock (the fact
  has whole seconds, so the answer is the one the host would give);
- at the end of a run that asked for a different set of facts (or polls), that set is
  saved on the host for the next run (one command; a steady no-op run saves nothing). The
  host keeps commands, never values: a stale list costs a wasted command, never a wrong
  answer.

It wraps pyinfra internals (`pyinfra.api.facts._get_fact`, `Host.run_shell_command`,
`put_file`, `rsync`, `FunctionCommand.execute`) written against pyinfra 3.10 (pyproject pins
>=3.10,<3.11): on another version, or when one of them is gone, nothing is wrapped and
every fact is read from the host as before. `INFRA_FACT_CACHE=0` turns it all off (pyinfra's plain behaviour), e.g. to compare;
`INFRA_FACT_CACHE=verify` answers every fact (and every poll's fact) from the host one by
one and reports each cached answer that differs from it (the e2e proof that a seed equals
the real fact).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import gevent
from pyinfra import logger
from pyinfra.api import StringCommand
from pyinfra.api import facts as pyinfra_facts
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.api.command import FunctionCommand
from pyinfra.api.host import Host
from pyinfra.api.state import BaseStateCallback
from pyinfra.connectors.util import CommandOutput, OutputLine

HOST_SCRIPT = Path(__file__).with_name("prefetch_host.py").read_text()
_SYSTEM = re.compile(r"^[a-z][a-z0-9_-]*$")
CLOCK = "server.Date"
MAX_COMMAND = 32_000  # longer fact commands are not recorded (argv-sized scripts)
# Probes of something outside the host's files and units: always asked live.
VOLATILE = frozenset({
    "facts.http.HttpHealth", "facts.http.HttpHealthMany", "facts.units.UnitDiagnostics", "facts.ingestor.HomeAssistantApi",
    "facts.hivesync.R2Buckets", "server.Date",
})


# Readings of a quantity that moves by itself (free disk, available memory): two reads a
# moment apart differ, so verify mode counts them apart. A seeded reading is still one
# taken in this run, after its lock and before any change, like the real fact's.
MEASUREMENTS = frozenset({"facts.system.FreeDiskMb", "facts.system.MemAvailableMb"})


def enabled() -> bool:
    return os.environ.get("INFRA_FACT_CACHE", "1").strip().lower() not in ("0", "no", "false", "off")


def verifying() -> bool:
    return os.environ.get("INFRA_FACT_CACHE", "").strip().lower() == "verify"


def executor_key(arguments: dict) -> str:
    """The connector arguments a command runs with, as a comparable string."""
    return repr(sorted((k, repr(v)) for k, v in arguments.items() if k in CONNECTOR_ARGUMENT_KEYS))


def command_text(command) -> str:
    return command.get_raw_value() if isinstance(command, StringCommand) else str(command)


def output_lines(stdout: str) -> list[str]:
    """Stdout split the way pyinfra's connectors read it (per line, "\\n" stripped)."""
    lines = stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def clean_answers(results: object, base: str) -> dict[tuple[str, str], list[str]]:
    """(command, connector arguments) -> stdout lines of the host script's answers that
    exited 0 with UTF-8 output (anything else is read from the host again)."""
    answers = {}
    for item in results if isinstance(results, list) else []:
        if isinstance(item, list) and len(item) == 3:
            command, status, stdout = item
            if status == 0 and isinstance(command, str) and isinstance(stdout, str):
                answers[(command, base)] = output_lines(stdout)
    return answers


class HostCache:
    """One host's answers (command, connector arguments) -> stdout lines, and the fact
    commands this run asked for (to prefetch next time)."""

    def __init__(self, system: str, base_executor: str, known: list[str] | None = None,
                 known_polls: dict[str, list[str]] | None = None):
        self.system = system
        self.base = base_executor
        self.known = list(known or [])  # what the host's saved list held
        self.known_polls = {k: list(v) for k, v in (known_polls or {}).items()}
        self.values: dict[tuple[str, str], list[str]] = {}
        self.asked: dict[str, None] = {}
        self.polls_asked: dict[str, dict[str, None]] = {}  # operation -> fact commands its polls asked
        self.poll_key: str | None = None  # the operation whose poll is reading
        self.fresh: dict[tuple[str, str], list[str]] = {}  # this poll's one-command reading
        self.early: dict[tuple[str, str], list[str]] = {}  # every poll command, read with the prefetch
        self.early_used: set[str] = set()  # the operations whose first poll it answered
        self.facts: list[str | None] = []  # the fact being read (None: volatile/live)
        self.live = 0
        self.hits = self.misses = self.drops = 0
        self.changed = False  # a command, upload or callback ran since the prefetch
        self.polled = self.poll_hits = self.polled_early = 0
        self.verified = self.mismatches = self.measured = 0
        self.clock: tuple[datetime, float] | None = None  # the host's time, read once
        self.clock_hits = 0

    def seed(self, results: list) -> int:
        seeded = clean_answers(results, self.base)
        self.values.update(seeded)
        return len(seeded)

    def reading(self) -> bool:
        return bool(self.facts) and self.facts[-1] is not None

    def invalidate(self) -> None:
        if self.values:
            self.drops += 1
        self.values.clear()
        self.fresh.clear()
        self.early.clear()
        self.changed = True

    def record_poll(self, text: str) -> None:
        if self.poll_key is not None:
            self.polls_asked.setdefault(self.poll_key, {})[text] = None

    def changed_list(self) -> dict | None:
        """What to save for the next run (the fact commands and each operation's poll
        commands), or None when the host has it already."""
        asked = list(self.asked)
        polls = {key: list(commands) for key, commands in self.polls_asked.items()}
        if asked == self.known and polls == self.known_polls:
            return None
        return {"facts": asked, "polls": polls}


_CACHES: dict[Host, HostCache] = {}
_ORIGINAL: dict[str, object] = {}


def cache_for(host) -> HostCache | None:
    return _CACHES.get(host)


@contextmanager
def live():
    """Facts read inside come from the host (a health poll must see the host change): from
    one command, run now, holding what this operation's poll asked for last run (the rest
    one by one, learned for the next run)."""
    from pyinfra.context import ctx_host

    target = ctx_host.get() if ctx_host.isset() else None
    cache = _CACHES.get(target) if target is not None else None
    if cache is None:
        yield
        return
    outer = cache.live == 0
    cache.live += 1
    if outer:
        cache.poll_key = poll_key(target)
        cache.fresh = _poll_reading(target, cache, cache.poll_key)
    try:
        yield
    finally:
        cache.live -= 1
        if outer:
            cache.poll_key, cache.fresh = None, {}


def unchanged() -> bool:
    """True when this host's facts were prefetched in this run and no command, upload or
    callback has run on it since: what a fact read then says still holds (for what does not
    move by itself, like the Docker engine's version)."""
    from pyinfra.context import ctx_host

    target = ctx_host.get() if ctx_host.isset() else None
    cache = _CACHES.get(target._get_module() if hasattr(target, "_get_module") else target) if target else None
    return cache is not None and not cache.changed


def poll_key(target) -> str | None:
    """The operation polling (its names: stable from run to run), None outside one."""
    from pyinfra.context import state

    op_hash = getattr(target, "current_op_hash", None)
    if not op_hash or state is None:
        return None
    try:
        names = state.get_op_meta(op_hash).names
    except (KeyError, AttributeError):
        return None
    return " | ".join(sorted(names)) or None


def _poll_reading(target, cache: HostCache, key: str | None) -> dict[tuple[str, str], list[str]]:
    """This poll's facts, as learned last run, read from the host in ONE command now (the
    first poll of an operation in a run that has changed nothing: the reading taken with the
    prefetch, under this run's lock, is what the host says now)."""
    if key is None or verifying() or not cache.known_polls.get(key):
        return {}
    if (early := _early_reading(cache, key)) is not None:
        return early
    from pyinfra.context import state

    ok, output = _ORIGINAL["run_shell_command"](target, host_command("poll", cache.system, key), print_output=False,
                                                **_executor(state, target))
    try:
        results = _last_json(output) if ok else None
    except ValueError:
        results = None
    if not isinstance(results, list):
        logger.debug(f"{target.name}: poll reading failed, facts are read one by one")
        return {}
    cache.polled += 1
    return clean_answers(results, cache.base)


def _early_reading(cache: HostCache, key: str) -> dict[tuple[str, str], list[str]] | None:
    """The prefetch's reading of `key`'s poll commands, once per operation and only while
    nothing has run on the host since (a change drops it: the poll then reads the host)."""
    if cache.changed or key in cache.early_used:
        return None
    cache.early_used.add(key)
    reading = {(command, cache.base): cache.early[(command, cache.base)] for command in cache.known_polls[key]
               if (command, cache.base) in cache.early}
    if not reading:
        return None
    cache.polled += 1
    cache.polled_early += 1
    return reading


# ----------------------------------------------------------------------------- hooks


def _get_fact(state, host, cls, *args, **kwargs):
    cache = _CACHES.get(host)
    if cache is None:
        return _ORIGINAL["_get_fact"](state, host, cls, *args, **kwargs)

    def read():
        cache.facts.append(None if (cache.live or cls.name in VOLATILE) else cls.name)
        try:
            return _ORIGINAL["_get_fact"](state, host, cls, *args, **kwargs)
        finally:
            cache.facts.pop()

    if cls.name == CLOCK and not verifying():  # Date takes no argument; sudo or not, one clock
        return _host_clock(cache, read)
    return read()


def _host_clock(cache: HostCache, read):
    """The host's time now: read once, then advanced by the controller's monotonic clock."""
    if cache.clock is None:
        started = time.monotonic()
        value = read()
        if not isinstance(value, datetime):
            return value
        cache.clock = (value, started)
        return value
    value, started = cache.clock
    cache.clock_hits += 1
    return value + timedelta(seconds=int(time.monotonic() - started))


def _run_shell_command(self, command, *args, **kwargs):
    cache = _CACHES.get(self)
    run = _ORIGINAL["run_shell_command"]
    if cache is None:
        return run(self, command, *args, **kwargs)
    if not cache.facts:  # an operation's command (or a script beside the plan)
        cache.invalidate()
        return run(self, command, *args, **kwargs)
    text = command_text(command)
    key = (text, executor_key(kwargs))
    recordable = key[1] == cache.base and len(text) <= MAX_COMMAND and not _holds_secret(command)
    if not cache.reading():  # a poll's fact or a probe: read now
        if recordable and cache.live:
            cache.record_poll(text)
        if key in cache.fresh:  # read by this poll's one command, a moment ago
            cache.poll_hits += 1
            return True, CommandOutput([OutputLine("stdout", line) for line in cache.fresh.pop(key)])
        return run(self, command, *args, **kwargs)
    if recordable:
        cache.asked[text] = None
    if key in cache.values:
        cache.hits += 1
        if verifying():
            return _verified(cache, self, key, run(self, command, *args, **kwargs))
        return True, CommandOutput([OutputLine("stdout", line) for line in cache.values[key]])
    cache.misses += 1
    # Not kept: a loop that reads a fact until the host changes by itself (a process coming
    # up after a start) must see each new answer. Only the prefetch's answers are reused.
    return run(self, command, *args, **kwargs)


def _verified(cache: HostCache, target, key, real):
    """The host's own answer; a cached one that differs is reported."""
    status, output = real
    cache.verified += 1
    if status and list(output.stdout_lines) == cache.values[key]:
        return real
    if status and cache.facts[-1] in MEASUREMENTS:
        cache.measured += 1
    else:
        cache.mismatches += 1
        logger.warning(f"{target.name}: fact prefetch MISMATCH for {cache.facts[-1]} `{key[0][:100]}`")
    return real


def _changing(name: str):
    def wrapper(self, *args, **kwargs):
        if (cache := _CACHES.get(self)) is not None:
            cache.invalidate()
        return _ORIGINAL[name](self, *args, **kwargs)

    return wrapper


def _function_execute(self, state, host, connector_arguments):
    target = host._get_module() if hasattr(host, "_get_module") else host
    if (cache := _CACHES.get(target)) is not None:
        cache.invalidate()
    return _ORIGINAL["function_execute"](self, state, host, connector_arguments)


def _holds_secret(command) -> bool:
    return isinstance(command, StringCommand) and command.get_masked_value() != command.get_raw_value()


SUPPORTED = "3.10."


def applicable(version: str | None = None) -> str | None:
    """Why the wrappers do not apply to this pyinfra (None: they do)."""
    import pyinfra

    version = version or pyinfra.__version__
    if not version.startswith(SUPPORTED):
        return f"pyinfra {version} is not {SUPPORTED}x"
    for owner, attribute in ((pyinfra_facts, "_get_fact"), (Host, "run_shell_command"), (Host, "put_file"),
                             (Host, "rsync"), (FunctionCommand, "execute")):
        if not callable(getattr(owner, attribute, None)):
            return f"{getattr(owner, '__name__', owner)}.{attribute} is gone"
    return None


def install(version: str | None = None) -> bool:
    """Wrap pyinfra's fact reader and the host's transport (once per process); True when
    wrapped, False (nothing changed) on a pyinfra these were not written for."""
    if _ORIGINAL:
        return True
    if reason := applicable(version):
        logger.debug(f"fact prefetch off: {reason}")
        return False
    _ORIGINAL["_get_fact"] = pyinfra_facts._get_fact
    _ORIGINAL["run_shell_command"] = Host.run_shell_command
    _ORIGINAL["put_file"] = Host.put_file
    _ORIGINAL["rsync"] = Host.rsync
    _ORIGINAL["function_execute"] = FunctionCommand.execute
    pyinfra_facts._get_fact = _get_fact
    Host.run_shell_command = _run_shell_command
    Host.put_file = _changing("put_file")
    Host.rsync = _changing("rsync")
    FunctionCommand.execute = _function_execute
    return True


# ----------------------------------------------------------------------------- prefetch


def _executor(state, target) -> dict:
    arguments, _ = pop_global_arguments(state, target, {})
    return {k: v for k, v in arguments.items() if k in CONNECTOR_ARGUMENT_KEYS}


def host_command(action: str, system: str, *args: str) -> StringCommand:
    return StringCommand("python3", "-c", shlex.quote(HOST_SCRIPT), action, system, *map(shlex.quote, args))


def clock_command() -> str:
    from pyinfra.facts.server import Date

    return Date().command()


def _seed_clock(cache: HostCache, reply: object, sent: float) -> None:
    """The host's time as the prefetch command read it, advanced from when the command was
    sent (as `_host_clock` does from a reading of its own)."""
    from pyinfra.facts.server import Date

    if not (isinstance(reply, list) and len(reply) == 3 and reply[1] == 0 and isinstance(reply[2], str)):
        return
    try:
        cache.clock = (Date().process(output_lines(reply[2])), sent)
    except (ValueError, IndexError):
        cache.clock = None


def _last_json(output) -> object:
    for line in reversed(output.stdout_lines):
        if line.startswith(("[", "{")):
            return json.loads(line)
    return None


def prefetch(system: str) -> None:
    """Seed this host's fact cache with what the last run of `system` asked for."""
    from pyinfra import host
    from pyinfra.context import state

    prefetch_host(state, host._get_module(), system)


def unlike_a_fact(executor: dict) -> str | None:
    """Why the host script cannot run facts the way pyinfra would for this host (None: it
    can). It runs each one as `sh -c` without a terminal; a host whose data picks another
    shell or a PTY would get answers pyinfra's own reading would not give."""
    shell = executor.get("_shell_executable")
    if shell not in (None, "sh"):
        return f"_shell_executable is {shell!r}"
    if executor.get("_get_pty"):
        return "_get_pty is set"
    return None


def prefetch_host(state, target, system: str) -> HostCache | None:
    if (executor := run_executor(state, target, system)) is None:
        return _CACHES.get(target)
    sent = time.monotonic()
    ok, output = _ORIGINAL["run_shell_command"](target, run_command(system), print_output=False, **executor)
    return seed_host(state, target, system, executor, ok, output, sent)


def run_executor(state, target, system: str) -> dict | None:
    """The connector arguments to prefetch `system`'s facts on `target` with, or None when
    there is nothing to run: prefetch off, already done in this run (a second deploy file:
    the first one's cache goes on), or a host whose facts the script cannot run as pyinfra
    would. Lets the deploy lock send its take and this prefetch as one command."""
    if not enabled() or not _SYSTEM.match(system) or not install() or target in _CACHES:
        return None
    executor = _executor(state, target)
    if reason := unlike_a_fact(executor):
        logger.debug(f"{target.name}: fact prefetch off ({reason}): facts are read one by one")
        return None
    return executor


def run_arguments(system: str) -> list[str]:
    """The host script's arguments to read the host's clock and run the facts (and poll
    commands) the last run asked for."""
    return ["run", system, clock_command()]


def run_command(system: str) -> StringCommand:
    """The one command that reads the host's clock and runs the facts the last run asked for."""
    return host_command(*run_arguments(system))


def seed_host(state, target, system: str, executor: dict, ok: bool, output, sent: float) -> HostCache:
    """This host's cache from the output of `run_command` (sent at `sent`, monotonic); a
    failed or garbled reply seeds nothing and every fact is read from the host."""
    try:
        reply = _last_json(output) if ok else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("facts"), list):
        logger.warning(f"{target.name}: fact prefetch failed, facts are read one by one "
                       f"({' '.join(output.stderr_lines[-2:]) or 'no output'})")
        reply = {"facts": []}
    results = reply["facts"]
    polls = reply.get("polls") if isinstance(reply.get("polls"), dict) else {}
    cache = HostCache(system, executor_key(executor), [r[0] for r in results if isinstance(r, list) and r],
                      {k: [c for c in v if isinstance(c, str)] for k, v in polls.items() if isinstance(v, list)})
    seeded = cache.seed(results)
    cache.early = clean_answers(reply.get("polled"), cache.base)
    _seed_clock(cache, reply.get("clock"), sent)
    _CACHES[target] = cache
    logger.debug(f"{target.name}: prefetched {seeded} of {len(results)} facts for {system}")
    if not any(isinstance(h, _Saver) for h in state.callback_handlers):
        state.add_callback_handler(_Saver())
    return cache


def forget(target) -> None:
    """Stop caching for `target` (tests; a second State in the same process)."""
    _CACHES.pop(target, None)


def save(target, state) -> None:
    """Store the fact commands this run asked for on the host, when they changed."""
    cache = _CACHES.get(target)
    if cache is None or "--dry" in sys.argv or target in state.failed_hosts:
        return  # a failed run asked for part of the facts only: the saved list stays
    if (record := cache.changed_list()) is None:
        return
    executor = _executor(state, target)
    ok, output = _ORIGINAL["run_shell_command"](
        target, host_command("save", cache.system), print_output=False, _stdin=json.dumps(record),
        **{k: v for k, v in executor.items() if k != "_stdin"})
    if ok:
        cache.known, cache.known_polls = record["facts"], record["polls"]
    else:
        logger.warning(f"{target.name}: could not save the fact list ({' '.join(output.stderr_lines[-2:])})")


class _Saver(BaseStateCallback):
    @staticmethod
    def operation_end(state, op_hash):
        order = state.get_op_order()
        if order and op_hash == order[-1]:
            targets = list(_CACHES)  # each save is a round trip: all hosts at once
            gevent.joinall([gevent.spawn(save, target, state) for target in targets], raise_error=True)
            for target in targets:
                cache = _CACHES[target]
                summary = (f"{target.name}: fact cache {cache.hits} hits, {cache.misses} misses, "
                           f"{cache.drops} drops; {cache.polled} poll readings ({cache.polled_early} taken with the prefetch) "
                           f"answered {cache.poll_hits}")
                if verifying():
                    logger.warning(f"{summary}; verified {cache.verified}, mismatches {cache.mismatches}, "
                                   f"measurements that moved {cache.measured}")
                else:
                    logger.debug(summary)
