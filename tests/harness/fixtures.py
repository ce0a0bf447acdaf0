"""pytest fixtures for e2e tests on disposable hosts.

Use from tests/conftest.py, either way:

    pytest_plugins = ["tests.harness.fixtures"]
    # or
    from tests.harness.fixtures import test_cluster, test_cluster_hosts  # noqa: F401

`test_cluster` is one session-wide Cluster (dnsmasq + pebble helper, inventory written to
.hosts/inventory.json). Hosts are added by name and cached, so every module can ask for
what it needs and a session boots each host once:

    music = test_cluster.add_host("music", groups=["music"])          # boots (~2 s)
    music = test_cluster.add_host("music", groups=["music"])          # same Host, no boot

No engine: the tests skip - unless INFRA_E2E_REQUIRED is set (CI), then they fail.
INFRA_E2E_KEEP=1 leaves the cluster up after the session for debugging.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._util import HarnessError, log
from .engine import EngineError, ensure_engine
from .hosts import Cluster, Host, HostSpec, _pid_alive

REQUIRED_ENV = "INFRA_E2E_REQUIRED"
KEEP_ENV = "INFRA_E2E_KEEP"

# One cluster per process even if the fixture is registered twice (conftest + a module).
_SESSION: Cluster | None = None


@pytest.fixture(scope="session")
def test_cluster_hosts() -> list[HostSpec]:
    """Hosts to boot before the first test; override this fixture in a conftest."""
    return []


@pytest.fixture(scope="session")
def test_cluster(request: pytest.FixtureRequest,
                 test_cluster_hosts: list[HostSpec]) -> Iterator[Cluster]:
    """The session's cluster (DNS + ACME helpers); torn down by id at the very end."""
    cluster = _session_cluster(request.config)
    if test_cluster_hosts:
        cluster.add_hosts(list(test_cluster_hosts))
    yield cluster


def module_host(request: pytest.FixtureRequest, cluster: Cluster, name: str,
                **spec: object) -> Host:
    """Boot `name` and remove it when the requesting fixture's scope ends.

    For hosts one module uses alone: the session cluster then holds only what the
    running module needs (Docker-in-Docker hosts cost memory and CPU while idle).
    """
    host = cluster.add_host(name, **spec)  # type: ignore[arg-type]
    if not os.environ.get(KEEP_ENV):
        request.addfinalizer(lambda: cluster.remove_host(name))
    return host


def _session_cluster(config: pytest.Config) -> Cluster:
    global _SESSION
    if _SESSION is not None:
        return _SESSION
    _require_engine()
    cluster = Cluster(owner="pytest")
    config.add_cleanup(lambda: _teardown(cluster))  # registered first: covers a failed start
    _terminate_cleanly_on_sigterm()
    try:
        cluster.start(dns=True, acme=True)
    except HarnessError as exc:  # an expected failure (image build, engine): one message
        pytest.fail(f"test cluster could not start: {exc}", pytrace=False)
    # subprocesses (pyinfra with inventory.py) find this cluster's inventory through it
    os.environ.setdefault("INFRA_HOSTS_DIR", str(cluster.hosts_dir))
    _SESSION = cluster
    return cluster


def sweep_dead_workers_clusters(base: Path) -> None:
    """Remove the clusters of pytest-xdist workers that died before their own teardown.

    An interrupted controller stops its workers without waiting for their cleanups, which
    would leave their containers running until the next run in the same directory.
    """
    for state in sorted(base.glob("gw*/state.json")):
        cluster = Cluster.load(state.parent)
        if cluster is not None and cluster.owner == "pytest" and not _pid_alive(cluster.pid):
            log(f"removing cluster {cluster.run_id} of a worker that is gone ({state.parent})")
            cluster.down()


def _require_engine() -> None:
    """Skip (laptop without Docker) or fail (CI: INFRA_E2E_REQUIRED set) without an engine."""
    try:
        ensure_engine()
        return
    except EngineError as exc:
        message = f"no Docker engine for e2e tests: {exc}"
    if os.environ.get(REQUIRED_ENV):
        pytest.fail(f"{message} ({REQUIRED_ENV} is set)", pytrace=False)
    pytest.skip(message)


def _teardown(cluster: Cluster) -> None:
    global _SESSION
    _SESSION = None
    if os.environ.get(KEEP_ENV):
        log(f"{KEEP_ENV} set: leaving cluster {cluster.run_id} up; ssh config {cluster.ssh_config_path}; "
            "remove it with `python -m tests.harness down`")
        return
    cluster.down()


def _terminate_cleanly_on_sigterm() -> None:
    """CI timeouts send SIGTERM: turn it into KeyboardInterrupt so cleanups still run."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def handler(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        try:
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            pass
