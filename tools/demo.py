"""`make demo`: a disposable host with DNS and ACME helpers, the music deploy, its health.

Reuses the cluster of `make hosts-up` when one is recorded in .hosts/, otherwise starts
one (it stays up for exploring; `make hosts-down` removes it). dnsmasq answers the
demo's public names with the host's address and pebble issues the certificates; the
sample apps under tests/apps stand in for Music Assistant and the OAuth server.
Secrets come from .env or the environment; throwaway values are generated when unset.
`DEMO=hello make demo` deploys the minimal sample system instead.
"""

from __future__ import annotations

import json
import os
import secrets as token
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from deploys import secrets  # noqa: E402
from tests.harness.hosts import Cluster  # noqa: E402

MUSIC, OAUTH = "music.demo.test", "oauth.demo.test"


def cluster() -> Cluster:
    existing = Cluster.load()
    if existing is not None:
        return existing
    return Cluster(owner="cli").start(dns=True, acme=True)


def with_secrets(names: list[str]) -> dict:
    env = dict(os.environ, DEPLOY_ENV="test")
    values = secrets.load()
    for name in names:
        if secrets.is_placeholder(values.get(name)):
            env[name] = token.token_urlsafe(24)
    return env


def deploy(demo: Cluster, system: str, host: str, env: dict, data: dict) -> bool:
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", f"deploys/{system}.py", "--limit", host, "-y"]
    for key, value in data.items():
        cmd += ["--data", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    env["INFRA_HOSTS_DIR"] = str(demo.hosts_dir)
    return subprocess.run(cmd, cwd=REPO, env=env).returncode == 0


def https_status(demo: Cluster, address: str, name: str, path: str) -> str:
    context = ssl.create_default_context(cafile=str(demo.acme_root_file()))
    try:
        with httpx.Client(verify=context, timeout=10) as client:
            r = client.get(f"https://{address}{path}", headers={"Host": name}, extensions={"sni_hostname": name})
        return f"HTTP {r.status_code} {r.text[:120]}"
    except httpx.HTTPError as exc:
        return f"error: {exc}"


def music_demo(demo: Cluster) -> int:
    from tests.apps.music_assistant.build import build_wheel

    host = demo.add_host("music-demo", groups=["native_vm", "music"])
    for name in (MUSIC, OAUTH):
        demo.set_record(name, host.address)
    wheel = build_wheel(Path(tempfile.mkdtemp(prefix="demo-wheel-")), "1.0.0")
    data = {
        "music_public_name": MUSIC,
        "oauth_public_name": OAUTH,
        "oauth_server_src": "tests/apps/oauth_server",
        "music_assistant_wheel": str(wheel),
        "music_assistant_pip_args": ["--no-index"],
        "music_external_address": host.address,
        "music_external_ca_file": str(demo.acme_root_file()),
        "nginx_listen_ipv6": False,
    }
    if not deploy(demo, "music", host.name, with_secrets(["ALEXA_CLIENT_SECRET"]), data):
        print("demo: deploy failed (see above)", file=sys.stderr)
        return 1
    print("\n=== demo: music ===")
    print(f"host:  ssh -F {demo.ssh_config_path} {host.name}   ({host.address})")
    for name, path in ((MUSIC, "/"), (OAUTH, "/health"), (OAUTH, "/alexa/authorize?client_id=alexa-skill&redirect_uri=https://x.test/cb&state=s")):
        print(f"https://{name}{path}  ->  {https_status(demo, host.address, name, path)}")
    print(f"again: make apply DEPLOY=music LIMIT={host.name}   (0 changes; pass the same --data)")
    print("remove: make hosts-down")
    return 0


def hello_demo(demo: Cluster) -> int:
    host = demo.add_host("hello-demo", groups=["native_vm", "hello"])
    if not deploy(demo, "hello", host.name, with_secrets(["HELLO_SECRET"]), {}):
        return 1
    health = host.exec("curl -fsS http://127.0.0.1:8080/health").stdout
    print(f"\n=== demo: hello ===\nhost: ssh -F {demo.ssh_config_path} {host.name}\nhealth: {health}")
    return 0


def main() -> int:
    demo = cluster()
    return hello_demo(demo) if os.environ.get("DEMO") == "hello" else music_demo(demo)


if __name__ == "__main__":
    sys.exit(main())
