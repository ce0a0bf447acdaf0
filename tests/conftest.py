"""Shared fixtures: the disposable-host cluster (session-scoped; boots once per run).

Under pytest-xdist (`make test` runs e2e with E2E_WORKERS, default 2) each worker process
has its own cluster and state: INFRA_HOSTS_DIR/<worker id>. It is set here, before the
harness is imported, because the harness reads it at import. The controller removes what a
worker that was cut off could not.
"""

import os
from pathlib import Path

_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_BASE = Path(os.environ.get("INFRA_HOSTS_DIR", Path(__file__).resolve().parents[1] / ".hosts"))
if _WORKER and _BASE.name != _WORKER:  # idempotent if a subprocess re-imports this conftest
    os.environ["INFRA_HOSTS_DIR"] = str(_BASE / _WORKER)

pytest_plugins = ["tests.harness.fixtures"]


def pytest_unconfigure(config):
    if _WORKER or not getattr(config.option, "numprocesses", None):
        return
    if os.environ.get("INFRA_E2E_KEEP"):
        return
    from tests.harness.fixtures import sweep_dead_workers_clusters

    sweep_dead_workers_clusters(_BASE)


# Serial seconds per e2e module (durations summed from CI at 508a96c): under xdist the longest go first, so the two
# workers finish together (the run keeps collection order: --no-loadscope-reorder).
E2E_MODULE_SECONDS = {  # measured in CI (sum of a module's durations; session 9), plus estimates of later additions (archon images release, youtube start failure)
    "test_music.py": 1060, "test_archon.py": 720, "test_ingestor.py": 428, "test_hivesync.py": 403,
    "test_youtube.py": 400, "test_hivesync_local.py": 175, "test_faults_compose.py": 149,
    "test_hello.py": 74, "test_faults.py": 60, "test_preflight_and_drift.py": 38,
    "test_bootstrap.py": 34, "test_harness.py": 14,
}


def pytest_collection_modifyitems(config, items):
    if not _WORKER:
        return
    items.sort(key=lambda item: -E2E_MODULE_SECONDS.get(Path(str(item.fspath)).name, 60))
