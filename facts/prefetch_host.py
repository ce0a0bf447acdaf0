"""Host side of the fact prefetch (run by facts/prefetch.py).

    python3 -c "<this file>" run|save SYSTEM      (save: the command list on stdin, JSON)

Stdlib only. `run` executes the fact commands the last run of SYSTEM asked for, each as
`sh -c COMMAND` exactly as pyinfra runs a fact (stdin closed, stdout captured), a few at a
time, and prints one JSON line: [[command, exit status, stdout or null], ...] (null: the
output was not UTF-8, so it is not used). `save` replaces that list. The list holds read-only
fact commands only; the file is private to the deploying account (0600 in a 0700 dir).
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

TIMEOUT_S = 20
WORKERS = 6


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
    try:
        with open(list_path(system)) as f:
            commands = json.load(f)
    except (OSError, ValueError):
        return []
    return [c for c in commands if isinstance(c, str)] if isinstance(commands, list) else []


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


def save(system, commands):
    path = list_path(system)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temp = path + ".tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(commands, f)
    os.replace(temp, path)


def main(argv):
    action, system = argv[1], argv[2]
    if action == "run":
        commands = load(system)
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            print(json.dumps(list(pool.map(run_one, commands))))
    elif action == "save":
        save(system, [c for c in json.load(sys.stdin) if isinstance(c, str)])
        print(json.dumps({"ok": True}))
    else:
        raise SystemExit("unknown action " + action)


if __name__ == "__main__":
    main(sys.argv)
