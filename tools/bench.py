"""`make bench`: speed and memory of the things operators wait for, against targets.

Kept out of the test suite on purpose (timed tests are flaky): this prints a table and
exits 1 when a target is missed, so a regression is visible without failing CI.

- render: the hardened unit template (per render)
- no-op apply: a second `pyinfra deploys/hello.py` on a disposable host (wall time,
  median of 3) and the pyinfra process's peak memory
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploys.parts.service import ServiceSpec, render_unit  # noqa: E402
from tests.harness.hosts import Cluster  # noqa: E402

TARGETS = {"render_ms": 5.0, "noop_apply_s": 15.0, "pyinfra_peak_mb": 250.0}


def bench_render(n: int = 500) -> float:
    spec = ServiceSpec.from_data({"name": "b", "exec_start": "/bin/true", "user": "b", "working_dir": "/"})
    start = time.perf_counter()
    for _ in range(n):
        render_unit(spec)
    return (time.perf_counter() - start) / n * 1000


def apply_once(cluster: Cluster, host: str) -> float:
    env = dict(os.environ, DEPLOY_ENV="test", HELLO_SECRET="bench-secret", INFRA_HOSTS_DIR=str(cluster.hosts_dir))
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", "deploys/hello.py", "--limit", host, "-y"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    results = {"render_ms": bench_render()}
    hosts_dir = Path(os.environ.get("INFRA_BENCH_HOSTS_DIR", "/tmp/infra-bench-hosts"))
    with Cluster(owner="bench", hosts_dir=hosts_dir) as cluster:
        cluster.start(dns=False, acme=False)
        cluster.add_host("bench-1", groups=["native_vm", "hello"])
        apply_once(cluster, "bench-1")  # first apply: converge
        results["noop_apply_s"] = statistics.median(apply_once(cluster, "bench-1") for _ in range(3))
    results["pyinfra_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    failed = 0
    print(f"{'metric':<18}{'value':>10}{'target':>10}")
    for key, value in results.items():
        ok = value <= TARGETS[key]
        failed += not ok
        print(f"{key:<18}{value:>10.2f}{TARGETS[key]:>10.2f}  {'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
