"""`make bench`: what operators wait for, measured on disposable hosts, against targets.

    python tools/bench.py [--only hello,music,...] [--runs 5]

Per deploy (hello and the five): fresh converge time, no-op apply time (median of
`--runs`, with min and max), remote commands of a no-op (and without the fact prefetch,
INFRA_FACT_CACHE=0), pyinfra's peak memory. Fan-out: the hello no-op on 1, 5 and 10
hosts. Plus the unit template's render time. Wall times depend on the machine's load (printed
with the table); the pyinfra process's CPU time is shown beside them. The cases are pytest modules
(tools/bench_cases/case_*.py) that build their hosts like the e2e tests do.

Writes .bench/results.md and .bench/results.json (git-ignored), prints the table and exits
1 when a target is missed or a case failed. Never part of `make test`: times vary with the
machine, so no test asserts one. Hosts live in $INFRA_BENCH_HOSTS_DIR (default: a `bench`
folder beside the usual hosts dir), so a `make hosts-up` cluster is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploys.parts.service import ServiceSpec, render_unit  # noqa: E402

DEPLOYS = ("hello", "music", "archon", "ingestor", "youtube", "hivesync")
CASE_FILE = {"hello": "case_hello.py", "fanout": "case_hello.py"}
NOOP_TARGET_S = {"hello": 1.2, "music": 2.0}
NOOP_DEFAULT_S = 3.0
COMMAND_TARGET = {"music": 15}
FANOUT_RATIO = 1.5
PEAK_MB = 250.0
RENDER_MS = 5.0
OUT_DIR = REPO / ".bench"


def bench_render(n: int = 500) -> float:
    spec = ServiceSpec.from_data({"name": "b", "exec_start": "/bin/true", "user": "b", "working_dir": "/"})
    start = time.perf_counter()
    for _ in range(n):
        render_unit(spec)
    return (time.perf_counter() - start) / n * 1000


def run_cases(selected: list[str], runs: int, raw: Path) -> int:
    files = dict.fromkeys(CASE_FILE.get(name, f"case_{name}.py") for name in selected)
    tests = [f"tools/bench_cases/{f}" for f in files]
    keyword = " or ".join(f"test_{name}" for name in selected)
    hosts_dir = os.environ.get("INFRA_BENCH_HOSTS_DIR") or str(
        Path(os.environ.get("INFRA_HOSTS_DIR", REPO / ".hosts")) / "bench")
    env = {**os.environ, "BENCH_OUT": str(raw), "BENCH_RUNS": str(runs), "INFRA_HOSTS_DIR": hosts_dir}
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.harness.fixtures", "-p", "no:cacheprovider", "-q",
           "-rA", "--durations=0", "-k", keyword, *tests]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=REPO, env=env).returncode


def rows(results: dict, selected: list[str]) -> tuple[list[list[str]], list[str]]:
    table, missed = [], []
    for name in [d for d in DEPLOYS if d in selected]:
        r = results.get(name)
        if r is None:
            table.append([name, "-", "-", "-", "-", "-", "-", "case failed"])
            missed.append(f"{name}: the case failed (see pytest output)")
            continue
        target = NOOP_TARGET_S.get(name, NOOP_DEFAULT_S)
        problems = []
        if r["noop_s"] > target:
            problems.append(f"no-op {r['noop_s']:.2f}s > {target}s")
        if name in COMMAND_TARGET and r["commands"] > COMMAND_TARGET[name]:
            problems.append(f"{r['commands']} commands > {COMMAND_TARGET[name]}")
        if r["peak_mb"] > PEAK_MB:
            problems.append(f"peak {r['peak_mb']:.0f} MB > {PEAK_MB:.0f} MB")
        missed += [f"{name}: {p}" for p in problems]
        table.append([
            name, f"{r['converge_s']:.1f}", f"{r['noop_s']:.2f} ({r['noop_min_s']:.2f}-{r['noop_max_s']:.2f})",
            f"{r['noop_cpu_s']:.2f}", seconds(r.get("hosts_cpu_s")), f"{r['commands']} ({r['commands_without_prefetch']})",
            f"{r['peak_mb']:.0f}",
            f"<= {target}s" + (f", <= {COMMAND_TARGET[name]} cmds" if name in COMMAND_TARGET else ""),
            "ok" if not problems else "MISSED: " + "; ".join(problems),
        ])
    return table, missed


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def cpu_floor_s(result: dict) -> float | None:
    """Wall time no scheduler can beat when the hosts run on the controller's own cores."""
    if result.get("hosts_cpu_s") is None or not result.get("cores"):
        return None
    return (result["noop_cpu_s"] + result["hosts_cpu_s"]) / result["cores"]


def markdown(table: list[list[str]], fan: dict | None, render_ms: float, load: str, missed: list[str]) -> str:
    head = ["deploy", "converge s", "no-op s median (min-max)", "no-op CPU s", "host's CPU s", "commands (no prefetch)", "peak MB", "target",
            "result"]
    lines = [f"# make bench ({time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {load})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    if fan is not None:
        lines += ["", "| hosts | no-op s median (min-max) | no-op CPU s | hosts' CPU s | CPU floor s | commands | peak MB |",
                  "|---|---|---|---|---|---|---|"]
        for count, r in sorted(fan.items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {count} | {r['noop_s']:.2f} ({r['noop_min_s']:.2f}-{r['noop_max_s']:.2f}) | {r['noop_cpu_s']:.2f} | "
                         f"{seconds(r.get('hosts_cpu_s'))} | {seconds(cpu_floor_s(r))} | {r['commands']} | {r['peak_mb']:.0f} |")
        ratio = fan["10"]["noop_s"] / fan["1"]["noop_s"]
        lines.append(f"\n10 hosts / 1 host: {ratio:.2f}x (target <= {FANOUT_RATIO}x)")
        lines.append("CPU floor: (pyinfra's CPU + the hosts' CPU) / this machine's cores, the shortest wall time "
                     "possible when the test hosts share the controller's cores.")
    lines += ["", f"unit template render: {render_ms:.2f} ms (target <= {RENDER_MS} ms)", ""]
    lines += ["All targets met."] if not missed else ["Missed:"] + [f"- {m}" for m in missed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join((*DEPLOYS, "fanout")),
                        help="comma-separated: " + ", ".join((*DEPLOYS, "fanout")))
    parser.add_argument("--runs", type=int, default=5, help="no-op applies per deploy (median, min, max)")
    args = parser.parse_args(argv)
    selected = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(selected) - {*DEPLOYS, "fanout"})
    if unknown:
        parser.error(f"unknown case(s) {unknown}")
    OUT_DIR.mkdir(exist_ok=True)
    raw = OUT_DIR / "raw.json"
    raw.unlink(missing_ok=True)
    render_ms = bench_render()
    run_cases(selected, args.runs, raw)
    results = json.loads(raw.read_text()) if raw.exists() else {}
    table, missed = rows(results, selected)
    fan = results.get("fanout")
    if "fanout" in selected:
        if fan is None:
            missed.append("fanout: the case failed (see pytest output)")
        elif (ratio := fan["10"]["noop_s"] / fan["1"]["noop_s"]) > FANOUT_RATIO:
            missed.append(f"fanout: 10 hosts take {ratio:.2f}x one host (> {FANOUT_RATIO}x)")
    if render_ms > RENDER_MS:
        missed.append(f"render: {render_ms:.2f} ms > {RENDER_MS} ms")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    report = markdown(table, fan if "fanout" in selected else None, render_ms, load, missed)
    (OUT_DIR / "results.md").write_text(report)
    (OUT_DIR / "results.json").write_text(json.dumps(
        {"results": results, "render_ms": render_ms, "load": load, "missed": missed,
         "targets": {"noop_s": NOOP_TARGET_S, "noop_default_s": NOOP_DEFAULT_S, "commands": COMMAND_TARGET,
                     "fanout_ratio": FANOUT_RATIO, "peak_mb": PEAK_MB, "render_ms": RENDER_MS}}, indent=2))
    print(report)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
