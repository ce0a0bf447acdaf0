"""What both HiveSync e2e modules use (test_hivesync.py: the Linode and the workstation;
test_hivesync_local.py: the operator's machine): the test secrets, the operator's
checkout, the stand-in images and the stack data the three backend roles share. Each
module still boots its own hosts (xdist runs them on different workers)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.apps.hivesync.build import HERE as APP_DIR
from tests.apps.hivesync.build import ensure_images

DOMAIN = "hivesync.test"
WRANGLER = "/usr/local/bin/wrangler-standin"
NPM = "/usr/local/bin/npm-standin"
WORKERS = ("preview_builder", "ai_docs_processor", "worker_callback_relayer")
WORKERS_SPEC = {
    "preview_builder": {"main": "index.js", "routes": [{"pattern": f"{DOMAIN}/workers/preview/*", "zone_name": DOMAIN}]},
    "ai_docs_processor": {"main": "index.js", "crons": ["*/10 * * * *"]},
    "worker_callback_relayer": {"main": "index.js", "routes": [f"{DOMAIN}/workers/callback/*"]},
    "healthcheck_worker": {"main": "index.js", "enabled": False},
}


def token(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(os.urandom(12)).decode().replace("-", "x").replace("_", "y")


SECRETS = {
    "RESEND_API_KEY": token("re_"),
    "OPENAI_API_KEY": token("sk-"),
    "R2_ACCOUNT_ID": token("acct"),
    "R2_ACCESS_KEY": token("akid"),
    "R2_SECRET_KEY": token("r2s"),
    "WORKER_CALLBACK_SECRET": token("cb"),
}


def load_images(host, tags) -> None:
    """One `docker save` of every image: shared layers cross once."""
    save = subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "exec", "-i", host.container_id, "docker", "load", "-q"], stdin=save.stdout,
                          capture_output=True, text=True, timeout=600)
    save.stdout.close()
    assert save.wait(timeout=60) == 0 and load.returncode == 0, load.stderr


def git(root, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": os.environ["PATH"], "HOME": str(root)}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture(scope="module")
def images():
    return ensure_images()


def make_checkout(parent: Path) -> Path:
    """The operator's HiveSync checkout: tests/apps/hivesync/source in a git repository
    (`parent`/hivesync, made once; the demo keeps it in its state dir)."""
    root = parent / "hivesync"
    if not (root / ".git").is_dir():
        shutil.copytree(APP_DIR / "source", root, dirs_exist_ok=True)
        git(root, "init", "-q")
        git(root, "add", "-A")
        git(root, "commit", "-qm", "sample source revision 1")
    return root


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return make_checkout(tmp_path_factory.mktemp("hivesync-checkout"))


def stack_data(images, checkout) -> dict:
    """The backend built from the checkout FROM the sample backend image (loaded on the
    host), the stand-in postgres and redis, fast healthchecks: every backend role's data."""
    return {
        "hivesync_backend_source": str(checkout),
        "hivesync_backend_build_args": {"BASE": images["backend"]},
        "hivesync_postgres_image": images["postgres"],
        "hivesync_redis_image": images["redis"],
        "hivesync_healthcheck_timing": {"interval": "1s", "timeout": "5s", "retries": 10, "start_period": "60s"},
        "hivesync_health_timeout_s": 90,
    }
