"""Host side of the deploy lock and audit log (run by deploys/parts/deploy_lock.py).

    python3 -c "<this file>" take|finish|history '<json payload>'

Stdlib only (any python3 >= 3.6 on the host). The lock is one JSON file naming its holder:
the SSH connection process of the pyinfra run that took it (its sshd/sshd-session
ancestor), or the pyinfra process itself for @local. The lock is live while that process
is (same pid, start time and boot), so a run that ends in any way - success, failure,
Ctrl-C, SIGKILL, a dropped connection - cannot leave a lock that blocks the next one. The
audit log is JSON lines, only ever appended to. Prints one JSON line.
"""
import fcntl
import json
import os
import sys
import time

SSH_PROCESSES = ("sshd", "sshd-session")


def paths():
    override = os.environ.get("INFRA_STATE_DIR")  # tests
    if override:
        return os.path.join(override, "lock"), os.path.join(override, "deploys.jsonl")
    if os.geteuid() == 0:  # on disk, not /run: a run cut by a reboot is still reported
        return "/var/lib/infra/lock", "/var/log/infra/deploys.jsonl"
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "infra", "lock"), os.path.join(state, "infra", "deploys.jsonl")


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def proc_stat(pid):
    """(comm, ppid, start time) of a process, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    end = data.rindex(")")
    fields = data[end + 2:].split()
    return data[data.index("(") + 1:end], int(fields[1]), int(fields[19])


def find_holder(controller_pid):
    """The process whose life is this run's: the local pyinfra (@local: an operator's own
    SSH login must not hold the lock), else the SSH connection."""
    if controller_pid:
        stat = proc_stat(controller_pid)
        if stat is not None:
            return {"kind": "local", "pid": controller_pid, "start": stat[2], "boot": boot_id()}
    pid = os.getppid()
    while pid > 1:
        stat = proc_stat(pid)
        if stat is None:
            break
        if stat[0] in SSH_PROCESSES:
            return {"kind": "ssh", "pid": pid, "start": stat[2], "boot": boot_id()}
        pid = stat[1]
    return {"kind": "lease", "until": time.time() + 3600}


def alive(holder):
    if holder.get("kind") == "lease":
        return time.time() < holder.get("until", 0)
    stat = proc_stat(int(holder.get("pid", 0)))
    return bool(stat) and stat[2] == holder.get("start") and holder.get("boot") == boot_id()


def append(log_path, record):
    os.makedirs(os.path.dirname(log_path), mode=0o750, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    with os.fdopen(fd, "a") as log:
        log.write(json.dumps(record, sort_keys=True) + "\n")


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def take(payload):
    lock_dir, log_path = paths()
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    lock_path = os.path.join(lock_dir, "deploy.json")
    started = time.time()
    deadline = started + float(payload.get("wait_s", 0))
    holder = find_holder(payload.get("controller_pid"))
    while True:
        with open(os.path.join(lock_dir, ".guard"), "a+") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            current = None
            if os.path.exists(lock_path):
                with open(lock_path) as f:
                    try:
                        current = json.load(f)
                    except ValueError:
                        current = None
            mine = current is not None and current.get("run_id") == payload["run_id"]
            if current is None or mine or not alive(current.get("holder", {})):
                result = {"ok": True}
                if current is not None and not mine:
                    result["stale"] = current
                    append(log_path, dict(_summary(current), event="interrupted", at=now(),
                                          note="holder gone without a finish record"))
                if not mine:
                    record = dict(payload, holder=holder, since=now())
                    record.pop("wait_s", None)
                    record.pop("refused_status", None)
                    tmp = lock_path + ".tmp"
                    with open(tmp, "w") as f:
                        json.dump(record, f)
                    os.replace(tmp, lock_path)
                    append(log_path, dict(_summary(record), event="start", at=record["since"]))
                if time.time() - started >= 0.5:  # it waited for another run (what comes next starts late)
                    result["waited_s"] = round(time.time() - started, 3)
                return result
        if time.time() >= deadline:
            return {"ok": False, "holder": _summary(current)}
        time.sleep(1)


def _summary(record):
    keys = ("run_id", "deploy", "who", "from", "since", "commit", "dirty")
    return {k: record.get(k) for k in keys if k in record}


def finish(payload):
    lock_dir, log_path = paths()
    lock_path = os.path.join(lock_dir, "deploy.json")
    append(log_path, dict(payload, event="finish", at=now()))
    with open(os.path.join(lock_dir, ".guard"), "a+") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            with open(lock_path) as f:
                if json.load(f).get("run_id") == payload["run_id"]:
                    os.remove(lock_path)
        except (OSError, ValueError):
            pass
    return {"ok": True}


def history(payload):
    """Runs of one deploy (or all), newest last: start merged with its finish."""
    _, log_path = paths()
    runs, order = {}, []
    try:
        with open(log_path) as f:
            lines = f.readlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if payload.get("deploy") and record.get("deploy") != payload["deploy"]:
            continue
        run = runs.setdefault(record.get("run_id"), {})
        if not run:
            order.append(record.get("run_id"))
        run.update(record)
        if record.get("event") == "interrupted":
            run["result"] = "interrupted"
        elif record.get("event") == "start":
            run.setdefault("result", "running or interrupted")
    return {"ok": True, "runs": [runs[r] for r in order][-int(payload.get("limit", 20)):]}


def main():
    action, payload = sys.argv[1], json.loads(sys.argv[2])
    result = {"take": take, "finish": finish, "history": history}[action](payload)
    print(json.dumps(result))
    if not result.get("ok") and payload.get("refused_status"):  # `take && next` runs next only under the lock
        sys.stdout.flush()
        sys.exit(int(payload["refused_status"]))


if __name__ == "__main__":  # also under `python3 -c`
    main()
