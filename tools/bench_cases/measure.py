"""Measuring for `make bench`. The cases (case_*.py here) are pytest modules on disposable
hosts, run by tools/bench.py and never by `make test` (nothing here asserts a time).

Each case builds its host the way its e2e module does (its fixtures and helpers), then
hands the run to `measure()`: a fresh converge, several no-op applies (wall time, peak
memory), and one more no-op with `--debug` to count remote commands. Results go to the
JSON file named by BENCH_OUT.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploys.settings import cli_data_value
from tests.e2e.runner import REPO, Run

OUT = Path(os.environ.get("BENCH_OUT", REPO / ".bench" / "raw.json"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
LOG_LINE = re.compile(r"^\s*(\[pyinfra|-->|\[\S+\] )")
REMOTE_COMMAND = re.compile(r"\[pyinfra\.connectors\.\w+\] (Running command on|Uploading|Downloading)")


def record(name: str, result: dict) -> None:
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[name] = result
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))


def pyinfra_run(deploy: str, limit: str, env: dict, data: dict, debug: bool = False, log: str | None = None) -> dict:
    """One `pyinfra inventory.py DEPLOY -y` as an operator runs it: wall time, the pyinfra
    process's peak RSS, changed operations, remote commands (with `--debug`)."""
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", deploy, "-y", "--json", "--limit", limit]
    for key, value in data.items():
        cmd += ["--data", f"{key}={cli_data_value(value)}"]
    if debug:
        cmd.append("--debug")
    full_env = {**os.environ, "DEPLOY_ENV": "test", "PYINFRA_PROGRESS": "off", **env}
    # an operator's Python caches bytecode; a sandbox's PYTHONDONTWRITEBYTECODE=1 would have
    # every run compile the repository's modules again (~0.1 s)
    full_env.pop("PYTHONDONTWRITEBYTECODE", None)
    stamps: list[tuple[float, str]] = []  # (seconds since start, line) of stderr, when debugging
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.PIPE if debug else err)
        if debug:  # each line's arrival time: how long each remote command kept the run waiting
            for raw in proc.stderr:
                stamps.append((time.perf_counter() - start, raw.decode(errors="replace").rstrip("\n")))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = "\n".join(line for _, line in stamps) if debug else err.read().decode(errors="replace")
    results = None
    if (at := stdout.find('{"plan"')) >= 0:
        try:
            results = json.loads(stdout[at:]).get("results")
        except json.JSONDecodeError:
            pass
    run = Run(proc.returncode, stdout, stderr, results)
    if log:  # the commands of a no-op, to see which remain, each with when it started and how long until the next line
        lines = []
        for i, (at, line) in enumerate(stamps):
            if REMOTE_COMMAND.search(line):  # until the next log line (a command's text may span lines)
                after = [t for t, text in stamps[i + 1:] if LOG_LINE.match(text)]
                waited = (after[0] if after else wall) - at
                lines.append(f"{at:6.2f}s +{waited:5.2f}s {line.strip()[:300]}")
        (OUT.parent / log).write_text("\n".join(lines) + "\n")
    if run.returncode != 0:
        raise AssertionError(f"pyinfra {deploy} --limit {limit} failed:\n{run.output[-4000:]}")
    return {
        "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024, "changed": run.changed,
        "commands": len(REMOTE_COMMAND.findall(run.output)) if debug else None,
    }


def host_containers(limit: str) -> list[str]:
    """Full ids of the test-host containers the --limit glob names (`infra-<cluster>-<host>`)."""
    out = subprocess.run(["docker", "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"],
                         capture_output=True, text=True).stdout
    return [cid for cid, name in (line.split(" ", 1) for line in out.splitlines() if " " in line)
            if name.startswith("infra-") and fnmatch.fnmatch(name.split("-", 2)[-1], limit)]


def container_cpu_s(container_id: str, root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPU seconds a container has used, from its cgroup (v1 cpuacct or v2 cpu.stat); None if unreadable."""
    for path in (root / "cpuacct/docker" / container_id / "cpuacct.usage",
                 root / "cpu,cpuacct/docker" / container_id / "cpuacct.usage"):
        if path.exists():
            return int(path.read_text()) / 1e9
    for stat in (root / f"system.slice/docker-{container_id}.scope/cpu.stat", root / "docker" / container_id / "cpu.stat"):
        if stat.exists():
            fields = dict(line.split() for line in stat.read_text().splitlines() if " " in line)
            return int(fields["usage_usec"]) / 1e6
    return None


def hosts_cpu_s(containers: list[str]) -> float | None:
    readings = [container_cpu_s(cid) for cid in containers]
    return None if not readings or None in readings else sum(readings)


def measure(deploy: str, limit: str, env: dict, data: dict, converge: bool = True, name: str = "") -> dict:
    """Converge, then RUNS no-ops: wall and CPU of pyinfra, and the CPU the hosts spent meanwhile
    (their containers' cgroups), since on one machine the hosts share the controller's cores."""
    result = {}
    if converge:
        first = pyinfra_run(deploy, limit, env, data)
        result["converge_s"] = first["wall_s"]
    settle = pyinfra_run(deploy, limit, env, data)  # learns what a no-op asks for
    assert settle["changed"] == [], f"second apply changed {settle['changed']}"
    containers = host_containers(limit)
    runs = []
    for _ in range(RUNS):
        before = hosts_cpu_s(containers)
        run = pyinfra_run(deploy, limit, env, data)
        after = hosts_cpu_s(containers)
        run["hosts_cpu_s"] = None if before is None or after is None else after - before
        runs.append(run)
    changed = [op for run in runs for op in run["changed"]]
    assert not changed, f"a no-op apply changed {changed}"
    walls = [run["wall_s"] for run in runs]
    name = name or Path(deploy).stem
    counted = pyinfra_run(deploy, limit, env, data, debug=True, log=f"{name}-noop-commands.log")
    plain = pyinfra_run(deploy, limit, {**env, "INFRA_FACT_CACHE": "0"}, data, debug=True,
                        log=f"{name}-noop-commands-without-prefetch.log")
    result.update({
        "noop_s": statistics.median(walls), "noop_cpu_s": statistics.median(run["cpu_s"] for run in runs), "noop_min_s": min(walls), "noop_max_s": max(walls), "runs": len(walls),
        "hosts_cpu_s": None if None in (host_cpu := [run["hosts_cpu_s"] for run in runs]) else statistics.median(host_cpu),
        "hosts": len(containers), "cores": os.cpu_count(),
        "commands": counted["commands"], "commands_without_prefetch": plain["commands"],
        "peak_mb": max(run["peak_mb"] for run in runs + ([first] if converge else [])),
    })
    return result


