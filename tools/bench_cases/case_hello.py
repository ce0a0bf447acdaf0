"""hello on one host, and the same no-op on 1, 5 and 10 hosts at once (fan-out).

Its own cluster without the DNS/ACME helper (hello needs neither): fewer containers to
boot on a busy machine.
"""

import pytest

from tests.harness._util import HOSTS_DIR, HarnessError
from tests.harness.hosts import Cluster
from tools.bench_cases.measure import measure, pyinfra_run, record

SECRET = {"HELLO_SECRET": "bench-secret"}


@pytest.fixture(scope="module")
def cluster():
    with Cluster(owner="bench", hosts_dir=HOSTS_DIR / "hello") as c:
        c.start(dns=False, acme=False)
        yield c


def env(cluster) -> dict:
    return {**SECRET, "INFRA_HOSTS_DIR": str(cluster.hosts_dir)}


def boot(cluster, name: str, attempts: int = 3):
    for attempt in range(attempts):
        try:
            return cluster.add_host(name, groups=["native_vm", "hello"])
        except HarnessError:
            cluster.remove_host(name)
            if attempt == attempts - 1:
                raise


def test_hello(cluster):
    host = boot(cluster, "bench-hello")
    try:
        record("hello", measure("deploys/hello.py", host.name, env(cluster), {}))
    finally:
        cluster.remove_host(host.name)


def test_fanout(cluster):
    names = [f"bench-fan-{i:02d}" for i in range(1, 11)]
    try:
        for name in names:  # one by one: ten systemd boots at once time out on a busy machine
            boot(cluster, name)
        pyinfra_run("deploys/hello.py", "bench-fan-*", env(cluster), {})  # converge all ten
        fan = {}
        for count, limit in ((1, "bench-fan-01"), (5, "bench-fan-0[1-5]"), (10, "bench-fan-*")):
            fan[str(count)] = measure("deploys/hello.py", limit, env(cluster), {}, converge=False,
                                      name=f"fanout-{count}")
        record("fanout", fan)
    finally:
        for name in names:
            cluster.remove_host(name)
