"""Disposable systemd test hosts in Docker for e2e tests of the deploys.

    from tests.harness import Cluster
    with Cluster().start(dns=True, acme=True) as cluster:
        music = cluster.add_host("music", groups=["music"])
        cluster.set_record("music.test", music.address)
        cluster.write_inventory()   # .hosts/inventory.json, read by inventory.py (DEPLOY_ENV=test)

CLI: `python -m tests.harness up|down|status|build-image`. pytest: see fixtures.py.
Standard library + the project venv only (cryptography for the SSH key, testinfra optional).
"""

from ._util import HarnessError
from .engine import EngineError, ensure_engine
from .hosts import Cluster, Host, HostSpec
from .image import ensure_image

__all__ = ["Cluster", "EngineError", "HarnessError", "Host", "HostSpec", "ensure_engine",
           "ensure_image"]
