"""hello on one host, and the same no-op on 1, 5 and 10 hosts at once (fan-out)."""

from tests.harness._util import HarnessError
from tests.harness.fixtures import module_host
from tools.bench_cases.measure import measure, pyinfra_run, record

ENV = {"HELLO_SECRET": "bench-secret"}


def test_hello(request, test_cluster):
    host = module_host(request, test_cluster, "bench-hello", groups=["native_vm", "hello"])
    record("hello", measure("deploys/hello.py", host.name, ENV, {}))


def boot(cluster, name: str, attempts: int = 3):
    for attempt in range(attempts):
        try:
            return cluster.add_host(name, groups=["native_vm", "hello"])
        except HarnessError:
            cluster.remove_host(name)
            if attempt == attempts - 1:
                raise


def test_fanout(request, test_cluster):
    names = [f"bench-fan-{i:02d}" for i in range(1, 11)]
    for name in names:  # one by one: ten systemd boots at once time out on a busy machine
        request.addfinalizer(lambda n=name: test_cluster.remove_host(n))
        boot(test_cluster, name)
    pyinfra_run("deploys/hello.py", "bench-fan-*", ENV, {})  # converge all ten
    fan = {}
    for count, limit in ((1, "bench-fan-01"), (5, "bench-fan-0[1-5]"), (10, "bench-fan-*")):
        fan[str(count)] = measure("deploys/hello.py", limit, ENV, {}, converge=False, name=f"fanout-{count}")
    record("fanout", fan)
