"""The e2e harness under pytest-xdist: one hosts dir per worker, and the controller removes
the cluster of a worker that died before its own teardown (and only that one)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.harness import fixtures
from tests.harness.hosts import Cluster

REPO = Path(__file__).resolve().parents[2]


def _state(dir_: Path, run_id: str, pid: int, owner: str = "pytest") -> None:
    dir_.mkdir(parents=True)
    (dir_ / "state.json").write_text(json.dumps({
        "run_id": run_id, "owner": owner, "pid": pid, "network": None, "dns": False,
        "acme": False, "helper": None, "hosts": []}))


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_only_dead_workers_clusters_are_removed(tmp_path, monkeypatch):
    _state(tmp_path / "gw0", "dead", _dead_pid())
    _state(tmp_path / "gw1", "alive", os.getpid())
    _state(tmp_path / "gw2", "cli-up", _dead_pid(), owner="cli")
    _state(tmp_path / "other", "not-a-worker", _dead_pid())
    removed = []
    monkeypatch.setattr(Cluster, "down", lambda self: removed.append(self.run_id))
    fixtures.sweep_dead_workers_clusters(tmp_path)
    assert removed == ["dead"]


def test_each_worker_gets_its_own_hosts_dir(tmp_path):
    code = "import os, tests.conftest; from tests.harness import _util; print(_util.HOSTS_DIR)"
    env = {**os.environ, "PYTEST_XDIST_WORKER": "gw1", "INFRA_HOSTS_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / "gw1")
