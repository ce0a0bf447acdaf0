"""Host side of the fact prefetch (run by facts/prefetch.py).

    python3 -c "<this file>" run SYSTEM [CLOCK_COMMAND]
    python3 -c "<this file>" poll SYSTEM OPERATION
    python3 -c "<this file>" save SYSTEM        (the record on stdin, JSON)

Stdlib only. `run` executes the fact commands the last run of SYSTEM asked for, each as
`sh -c COMMAND` exactly as pyinfra runs a fact (stdin closed, stdout captured), a few at a
time, and prints one JSON line: {"facts": [[command, exit status, stdout or null], ...],
"polls": {operation: [command, ...]}, "clock": [CLOCK_COMMAND, status, stdout]} (null: the
output was not UTF-8, so it is not used). `poll` runs, the same way and all at once, the
commands OPERATION's health poll asked for last run and prints their list. `save` replaces
the record ({"facts": [...], "polls": {...}}). It holds read-only fact commands only; the file
is private to the deploying account (0600 in a 0700 dir).
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

TIMEOUT_S = 20
WORKERS = 6
POLL_WORKERS = 16  # a poll's probes (HTTP health) mostly wait: all at once


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


def run_one(command):
    try:
        proc = subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return [command, -1, None]
    try:
        out = proc.stdout.decode("utf-8")
    except UnicodeDecodeError:
        out = None
    return [command, proc.returncode, out]


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


def run_all(commands, workers):
    if not commands:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(commands))) as pool:
        return list(pool.map(run_one, commands))


def main(argv):
    action, system = argv[1], argv[2]
    if action == "run":
        facts, polls = load(system)
        clock = run_one(argv[3]) if len(argv) > 3 else None
        print(json.dumps({"facts": run_all(facts, WORKERS), "polls": polls, "clock": clock}))
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
