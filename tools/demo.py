"""`make demo`: a disposable host with DNS and ACME helpers, a deploy, and its health.

Reuses the cluster of `make hosts-up` when one is recorded in .hosts/, otherwise starts
one (it stays up for exploring; `make hosts-down` removes it). Secrets come from .env
or the environment; a throwaway value is generated when none is set.
"""

from __future__ import annotations

import json
import os
import secrets as token
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploys import secrets  # noqa: E402
from tests.harness.hosts import Cluster  # noqa: E402

HOST = "demo-1"


def cluster() -> Cluster:
    existing = Cluster.load()
    if existing is not None:
        return existing
    return Cluster(owner="cli").start(dns=True, acme=True)


def main() -> int:
    env = dict(os.environ, DEPLOY_ENV="test")
    if secrets.is_placeholder(secrets.load().get("HELLO_SECRET")):
        env["HELLO_SECRET"] = token.token_urlsafe(24)
    demo = cluster()
    host = demo.add_host(HOST, groups=["native_vm", "hello"])
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", "deploys/hello.py", "--limit", HOST, "-y"]
    env["INFRA_HOSTS_DIR"] = str(demo.hosts_dir)
    if subprocess.run(cmd, cwd=REPO, env=env).returncode != 0:
        print("demo: deploy failed (see above)", file=sys.stderr)
        return 1
    health = host.exec("python3 -c \"import urllib.request as u;"
                       " print(u.urlopen('http://127.0.0.1:8080/health').read().decode())\"").stdout
    print("\n=== demo ===")
    print(f"host:    ssh -F {demo.ssh_config_path} {HOST}   ({host.address})")
    print("service: hello.service on 127.0.0.1:8080 (hardened; env file /etc/hello/hello.env, 0600)")
    print(f"health:  {json.dumps(json.loads(health))}")
    print("again:   make apply DEPLOY=hello LIMIT=demo-1   (0 changes)")
    print("diff:    make plan DEPLOY=hello LIMIT=demo-1")
    print("remove:  make hosts-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
