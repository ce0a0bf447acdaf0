"""Host side of the fact prefetch (run by facts/prefetch.py).

    python3 -c "<this file>" run SYSTEM [CLOCK_COMMAND]
    python3 -c "<this file>" poll SYSTEM OPERATION
    python3 -c "<this file>" save SYSTEM        (the record on stdin, JSON)

Stdlib only. `run` executes the fact commands the last run of SYSTEM asked for, each as
`sh -c COMMAND` exactly as pyinfra runs a fact (stdin closed, stdout captured), a few at a
time, and prints one JSON line: {"facts": [[command, exit status, stdout or null], ...],
"polls": {operation: [command, ...]}, "clock": [CLOCK_COMMAND, status, stdout], "polled":
[[command, status, stdout], ...]} (null: the output was not UTF-8, so it is not used);
"polled" is a first reading of every poll command, taken with the facts. `poll` runs, the
same way and all at once, the commands OPERATION's health poll asked for last run and
prints their list. `save` replaces the record ({"facts": [...], "polls": {...}}). It holds
read-only fact commands only; the file is private to the deploying account (0600 in a 0700
dir).

Cheap on the host, since a no-op apply is mostly this (issue 16): no threads and no
subprocess module; each command is a forked child, read through pipes by one poll loop. A
command that is exactly `python3 -c SCRIPT ARGS...` as pyinfra quotes it (optionally inside
the `if command -v python3` guard of a fact's requires_command) runs in a forked child of
this interpreter instead of a new one: same argv, stdin, stdout, exit status and __main__,
without paying for another interpreter's start (most of such a fact's cost). Anything else,
or anything that does not quote back to the same text, runs as `sh -c COMMAND`.
"""
import json
import os
import select
import signal
import sys
import time

TIMEOUT_S = 20
WORKERS = 6
POLL_WORKERS = 16  # a poll's probes (HTTP health) mostly wait: all at once
PYTHON_GUARD = ("if command -v python3 >/dev/null 2>&1; then ( ", " ); else echo '##PYINFRA_NOCMD##'; fi")
# python ignores these; a shell command gets them back, as subprocess gives them back
DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))
SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def list_path(system):
    override = os.environ.get("INFRA_STATE_DIR")  # tests
    if override:
        base = override
    elif os.geteuid() == 0:
        base = "/var/lib/infra"
    else:
        base = os.path.join(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "infra")
    return os.path.join(base, "facts", system + ".json")


def load(system):
    """(fact commands, {operation: poll commands}); an earlier list-only record is facts."""
    try:
        with open(list_path(system)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return [], {}
    if isinstance(record, list):
        record = {"facts": record}
    if not isinstance(record, dict):
        return [], {}
    facts = [c for c in record.get("facts") or [] if isinstance(c, str)]
    polls = record.get("polls") if isinstance(record.get("polls"), dict) else {}
    return facts, {k: [c for c in v if isinstance(c, str)] for k, v in polls.items() if isinstance(v, list)}


def quote(word):
    """shlex.quote, without importing shlex (and re) on the host."""
    if not word:
        return "''"
    if all(c in SAFE for c in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def split_quoted(text):
    """Words of `text` written as `quote` writes them, separated by single spaces; None
    for anything else a shell would read differently (checked by quoting them back)."""
    words, word, i, n, started = [], [], 0, len(text), False
    while i < n:
        c = text[i]
        if c == " ":
            if not started:
                return None
            words.append("".join(word))
            word, started = [], False
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                return None
            word.append(text[i + 1:end])
            started, i = True, end
        elif c == '"' and text.startswith("\"'\"", i):
            word.append("'")
            started, i = True, i + 2
        elif c in SAFE:
            word.append(c)
            started = True
        else:
            return None
        i += 1
    if started:
        words.append("".join(word))
    if " ".join(quote(w) for w in words) != text:
        return None
    return words


def python_form(command):
    """(script, argv) when `command` is `python3 -c SCRIPT ARGS...` (bare or inside a fact's
    `command -v python3` guard), else None."""
    if command.startswith(PYTHON_GUARD[0]) and command.endswith(PYTHON_GUARD[1]):
        command = command[len(PYTHON_GUARD[0]):-len(PYTHON_GUARD[1])]
    if not command.startswith("python3 -c "):
        return None
    words = split_quoted(command)
    if not words or len(words) < 3 or words[:2] != ["python3", "-c"]:
        return None
    return words[2], ["-c"] + words[3:]


def run_python(script, argv):
    """In a forked child: what `python3 -c SCRIPT ARGS` would do; its exit status."""
    sys.argv = argv
    main = type(sys)("__main__")
    sys.modules["__main__"] = main
    code = 0
    try:
        exec(compile(script, "<string>", "exec"), main.__dict__)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            sys.stderr.write(str(e.code) + "\n")
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    try:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = code or 120
    return code & 0xFF


def start(command):
    """Start the child that runs `command`: (pid, stdout fd, stderr fd)."""
    python = python_form(command)
    out_r, out_w = os.pipe()  # not inherited past exec: the child sees only its own
    err_r, err_w = os.pipe()
    try:
        if python is None and hasattr(os, "posix_spawnp"):  # vfork-cheap, unlike a fork of python
            pid = os.posix_spawnp("sh", ["sh", "-c", command], os.environ, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)], setsigdef=DEFAULT_SIGNALS)
        else:
            pid = forked(command, python, out_w, err_w)
    finally:
        os.close(out_w)
        os.close(err_w)
    return pid, out_r, err_r


def forked(command, python, out_w, err_w):
    """A forked child running `python` (script, argv) or, without posix_spawn, `sh -c`."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 127  # the child: never returns
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, 1024)  # as a new process: the loop's other pipes are not its own
        if python is None:
            for number in DEFAULT_SIGNALS:
                signal.signal(number, signal.SIG_DFL)
            os.execvp("sh", ["sh", "-c", command])
        code = run_python(*python)
    finally:
        os._exit(code)


def exit_status(status):
    """As subprocess reports it: the exit code, or minus the signal that ended it."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run_all(commands, workers):
    """[[command, exit status, stdout or None], ...], at most `workers` running at once."""
    results = [None] * len(commands)
    waiting = list(range(len(commands)))
    running = {}  # index -> [pid, open fds, stdout chunks, deadline]
    owner = {}  # fd -> (index, is stdout)
    poller = select.poll()
    while waiting or running:
        while waiting and len(running) < min(workers, len(commands)):
            index = waiting.pop(0)
            pid, out_fd, err_fd = start(commands[index])
            running[index] = [pid, 2, [], time.monotonic() + TIMEOUT_S]
            for fd, is_out in ((out_fd, True), (err_fd, False)):
                owner[fd] = (index, is_out)
                poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        soonest = min(child[3] for child in running.values())
        for fd, _ in poller.poll(max(0, int((soonest - time.monotonic()) * 1000)) + 1):
            index, is_out = owner[fd]
            data = os.read(fd, 65536)
            if data:
                if is_out:
                    running[index][2].append(data)
                continue
            poller.unregister(fd)
            os.close(fd)
            del owner[fd]
            running[index][1] -= 1
            if running[index][1] == 0:
                pid, _, chunks, _ = running.pop(index)
                results[index] = [commands[index], exit_status(os.waitpid(pid, 0)[1]), decoded(b"".join(chunks))]
        now = time.monotonic()
        for index in [i for i, child in running.items() if child[3] <= now]:
            pid = running.pop(index)[0]
            for fd in [fd for fd, (i, _) in owner.items() if i == index]:
                poller.unregister(fd)
                os.close(fd)
                del owner[fd]
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            os.waitpid(pid, 0)
            results[index] = [commands[index], -1, None]
    return results


def decoded(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def save(system, record):
    if isinstance(record, list):
        record = {"facts": record}
    facts = [c for c in record.get("facts") or [] if isinstance(c, str)]
    polls = record.get("polls") if isinstance(record.get("polls"), dict) else {}
    polls = {str(k): [c for c in v if isinstance(c, str)] for k, v in polls.items() if isinstance(v, list)}
    path = list_path(system)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temp = path + ".tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"facts": facts, "polls": polls}, f)
    os.replace(temp, path)


def main(argv):
    action, system = argv[1], argv[2]
    if action == "run":
        facts, polls = load(system)
        clock = run_all([argv[3]], 1)[0] if len(argv) > 3 else None
        poll_commands = list(dict.fromkeys(c for commands in polls.values() for c in commands))
        listed = set(facts)
        results = run_all(facts + [c for c in poll_commands if c not in listed], WORKERS)
        by_command = dict((r[0], r) for r in results)
        early = [by_command[c] for c in poll_commands]
        print(json.dumps({"facts": results[:len(facts)], "polls": polls, "clock": clock, "polled": early}))
    elif action == "poll":
        print(json.dumps(run_all(load(system)[1].get(argv[3]) or [], POLL_WORKERS)))
    elif action == "save":
        record = json.load(sys.stdin)
        save(system, record if isinstance(record, (list, dict)) else [])
        print(json.dumps({"ok": True}))
    else:
        raise SystemExit("unknown action " + action)


if __name__ == "__main__":
    main(sys.argv)
