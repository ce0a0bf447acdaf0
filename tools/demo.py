"""`make demo [DEMO=<system>]`: one disposable host, a system deployed to it, its answers.

The demo has its own cluster and state in .hosts/demo/ (apart from `make hosts-up`'s):
the hosts' key, the inventory (with the demo's data as host data), the secrets in a 0600
`secrets.env` generated once, and the sample artifacts. `make demo` run again re-applies
the same deploy with the same data and reports 0 changes; it prints the plain command that
does the same. dnsmasq answers the demo's public names with the host's address and pebble
issues the certificates; the sample apps under tests/apps stand in for the real ones.

A system is demoed the same generic way: its groups (from the production inventory), a
Docker engine in the host when it is a docker_host, its required secrets generated, its
test defaults, plus the few data items a `Demo` entry below adds (sample artifacts, names).
`make hosts-down` removes the demo's containers; `make clean` also forgets its state.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets as token
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploys import environments, secrets  # noqa: E402
from deploys.errors import ConfigError  # noqa: E402
from tests.harness import Cluster, HarnessError, Host, ensure_engine  # noqa: E402
from tests.harness._util import DEMO_DIR, docker  # noqa: E402

DEFAULT = "music"


@dataclass
class Context:
    cluster: Cluster
    host: Host
    state: Path  # .hosts/demo
    first: bool  # the host was just booted (one-time set-up goes here)
    env_file: Path  # state/secrets.env

    def secret(self, name: str) -> str:
        return secrets.load(environ={}, path=self.env_file)[name]

    def load_images(self, tags) -> None:
        """Copy images into the host's engine (no registry), only those it lacks."""
        missing = [t for t in tags if self.host.exec(["docker", "image", "inspect", t], check=False).returncode]
        if not missing:
            return
        start = time.monotonic()
        say(f"loading {len(missing)} image(s) into {self.host.name}: {' '.join(missing)} ...")
        save = subprocess.Popen(["docker", "save", *missing], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "exec", "-i", self.host.container_id, "docker", "load", "-q"],
                              stdin=save.stdout, capture_output=True, text=True, timeout=900)
        save.stdout.close()  # type: ignore[union-attr]
        if save.wait(timeout=60) or load.returncode:
            raise HarnessError(f"loading {' '.join(missing)} into {self.host.name} failed: {load.stderr.strip()}")
        say(f"images loaded in {time.monotonic() - start:.1f}s")


@dataclass(frozen=True)
class Demo:
    """What one system's demo adds to the generic path (all optional)."""

    names: tuple[str, ...] = ()  # public names dnsmasq points at the host
    data: Callable[[Context], dict] = lambda ctx: {}
    urls: tuple[tuple[str, str], ...] = ()  # (name, path) fetched over HTTPS at the end
    local_urls: tuple[str, ...] = ()  # fetched inside the host (curl), for loopback-only apps
    groups: tuple[str, ...] = ()  # default: the system's groups in the production inventory
    secrets: tuple[str, ...] = ()  # beyond the system's required_secrets
    os: str = "debian12"  # the host's base image (tests/harness: debian12, debian13)


def music_data(ctx: Context) -> dict:
    from tests.apps.music_assistant.build import build_runtime_wheel, build_wheel

    wheel = build_wheel(ctx.state / "wheels", "1.0.0")  # deterministic: same bytes every run
    wheelhouse = build_runtime_wheel(ctx.state / "wheels" / "deps").parent  # the [server] extra
    return {
        "music_public_name": "music.demo.test",
        "oauth_public_name": "oauth.demo.test",
        "oauth_server_src": "tests/apps/oauth_server",
        "music_assistant_wheel": str(wheel),
        "music_assistant_wheelhouse": str(wheelhouse),
        "music_assistant_pip_args": ["--no-index"],
        "music_external_address": ctx.host.address,
        "music_external_ca_file": str(ctx.cluster.acme_root_file()),
        "nginx_listen_ipv6": False,
    }


# The docker-host systems use the stand-in images and the data their e2e modules prove,
# imported from there so the demo follows those modules as the deploys change. Their
# healthchecks get more patience than the tests' (a first start on a busy laptop).
PATIENT = {"interval": "2s", "timeout": "5s", "retries": 60, "start_period": "5s"}

def archon_data(ctx: Context) -> dict:
    from tests.apps.archon.build import ensure_standin_images
    from tests.e2e import test_archon as e2e

    images = ensure_standin_images()
    ctx.load_images(images.values())
    ctx.host.write_file("/etc/archon/test-acme-root.pem", ctx.cluster.acme_root_file().read_text())
    return e2e.archon_data(images, names=("archon.demo.test", "studio.demo.test"),
                           archon_healthcheck_timing=PATIENT, archon_health_timeout_s=300)


def hivesync_data(ctx: Context) -> dict:
    from tests.apps.hivesync.build import ensure_images
    from tests.e2e import test_hivesync as e2e
    from tests.e2e.hivesync_common import make_checkout

    images = ensure_images()
    ctx.load_images(images.values())
    checkout = make_checkout(ctx.state)
    return e2e.server_data(images, ctx.host, ctx.cluster, checkout, hivesync_domain="hivesync.demo.test",
                           hivesync_healthcheck_timing=PATIENT, hivesync_health_timeout_s=300)


def ingestor_data(ctx: Context) -> dict:
    from tests.apps.ingestor.build import HA_STANDIN, SOURCE, ensure_standin_images
    from tests.e2e import test_ingestor as e2e

    images = ensure_standin_images()
    ctx.load_images(images.values())
    if ctx.host.exec("systemctl is-active ha-standin", check=False).returncode:
        # Home Assistant stand-in on the host's docker bridge, answering the demo's token
        ctx.host.write_file("/opt/ha-standin/home_assistant.py", HA_STANDIN.read_text())
        ctx.host.write_file("/etc/ha-standin.env", f"HA_TOKEN={ctx.secret('HOME_ASSISTANT_TOKEN')}\n", "0600")
        ctx.host.exec(["systemd-run", "--unit=ha-standin", "--property=EnvironmentFile=/etc/ha-standin.env",
                       "python3", "/opt/ha-standin/home_assistant.py"])
    return e2e.ingestor_data(images, SOURCE, ingestor_healthcheck_timing=PATIENT, ingestor_health_timeout_s=300)


def youtube_data(ctx: Context) -> dict:
    from tests.e2e import test_youtube as e2e

    if ctx.first:  # the operator's machine: a login user, the checkout, dev running
        e2e.prepare(ctx.host, ctx.cluster.public_key)
    return dict(e2e.DATA)


DEMOS: dict[str, Demo] = {
    "hello": Demo(local_urls=("http://127.0.0.1:8080/health",)),
    "music": Demo(
        names=("music.demo.test", "oauth.demo.test"),
        data=music_data,
        os="debian13",  # Music Assistant 2.3 wants ffmpeg >= 6: Debian 13 (as Ubuntu 24.04) has it
        urls=(("music.demo.test", "/"), ("oauth.demo.test", "/health"),
              ("oauth.demo.test", "/alexa/authorize?client_id=alexa-skill"
               "&redirect_uri=https://x.test/cb&state=s")),
    ),
    "archon": Demo(names=("archon.demo.test", "studio.demo.test"), data=archon_data,
                   urls=(("archon.demo.test", "/"), ("studio.demo.test", "/"))),
    "hivesync": Demo(names=("hivesync.demo.test",), data=hivesync_data,
                     os="debian13",  # the server role's e2e host (the Linode's Ubuntu 22.04 is not reachable here)
                     urls=(("hivesync.demo.test", "/api/health"),)),
    "ingestor": Demo(data=ingestor_data, local_urls=("http://127.0.0.1:8003/health",)),
    # the operator's machine (@local in production): a desktop with the dev checkout
    "youtube": Demo(data=youtube_data, groups=("local", "youtube"), secrets=("YOUTUBE_API_KEY",),
                    local_urls=("http://127.0.0.1:8001/health", "http://127.0.0.1:3001/")),
}


# ------------------------------------------------------------------ generic steps

def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def production_role(system: str) -> tuple[list[str], dict]:
    """The kind groups + data of the system's first production host (e.g. docker_host,
    hivesync_role=server), so the demo host is the kind of machine the system runs on."""
    for spec in environments.prod_hosts({}):
        if system in spec.groups:
            kinds = [g for g in spec.groups if g in environments.KINDS]
            data = {k: v for k, v in spec.data.items() if not k.startswith(("ssh_", "_"))}
            return [*kinds, system], data
    return ["native_vm", system], {}


def known_systems() -> list[str]:
    return sorted(p.stem for p in (REPO / "deploys").glob("*.py") if p.stem not in ("__init__",)
                  and (REPO / "group_data" / p.name).exists())


def cluster(state: Path) -> Cluster:
    """The demo's recorded cluster when all its containers still run, else a new one."""
    existing = Cluster.load(state)
    if existing is not None:
        ids = [h.container_id for h in existing.hosts.values()]
        ids += [existing.helper.container_id] if existing.helper else []
        states = [docker("inspect", "--format", "{{.State.Running}}", cid, check=False).stdout.strip()
                  for cid in ids]
        if ids and all(s == "true" for s in states):
            say(f"reusing the demo cluster {existing.run_id} ({state})")
            return existing
        say(f"the demo cluster {existing.run_id} is gone or stopped; starting a new one")
        existing.down()
    start = time.monotonic()
    say("starting the demo cluster: network + DNS (dnsmasq) and ACME (pebble) helper ...")
    fresh = Cluster(owner="demo", hosts_dir=state).start(dns=True, acme=True)
    say(f"cluster {fresh.run_id} up in {time.monotonic() - start:.1f}s")
    return fresh


def secrets_file(state: Path, names: list[str]) -> Path:
    """state/secrets.env (0600): each required secret generated once, then kept."""
    path = state / "secrets.env"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    values = secrets.load(environ={}, path=path)
    new = {n: token.token_urlsafe(24) for n in names if secrets.is_placeholder(values.get(n))}
    if new:
        with open(path, "a") as fh:
            fh.writelines(f"{k}={v}\n" for k, v in new.items())
    return path


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def again_command(system: str, host: str, state: Path, env_file: Path) -> str:
    """The exact pyinfra run the demo makes (DEPLOY_ENV=test is the default)."""
    return (f"INFRA_HOSTS_DIR={rel(state)} INFRA_ENV_FILE={rel(env_file)} "
            f"{rel(Path(sys.executable))} -m pyinfra inventory.py deploys/{system}.py --limit {host} -y")


# pyinfra prints "--> Starting operation: <deploy part> | <operation>"; the part is the phase.
_STARTING = re.compile(r"^--> Starting (?:nested )?operation: (?P<name>.*?)\s*$")
_SECTIONS = {"Loading config": "connect", "Loading inventory": "connect", "Connecting to hosts": "connect",
             "Preparing operation": "prepare (facts, change detection)",
             "Detected changes": "prepare (facts, change detection)",
             "Skipping change detection": "prepare (facts, change detection)",
             "Beginning operation run": "prepare (facts, change detection)", "Results": None}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Phases:
    """Durations of pyinfra's stages and of the deploy's parts, from its output lines."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.started = time.monotonic()
        self.done: list[tuple[str, float]] = []

    def feed(self, line: str) -> None:
        text = _ANSI.sub("", line).strip()
        if match := _STARTING.match(text):
            phase: str | None = match.group("name").split(" | ")[0]
        elif text.startswith("--> ") and (key := next((k for k in _SECTIONS if text[4:].startswith(k)), None)):
            phase = _SECTIONS[key]
        else:
            return
        if phase != self.current:
            self.finish()
            self.current, self.started = phase, time.monotonic()

    def finish(self) -> None:
        if self.current is not None:
            elapsed = time.monotonic() - self.started
            self.done.append((self.current, elapsed))
            say(f"{self.current}: {elapsed:.1f}s")
        self.current = None

    def summary(self) -> str:
        return ", ".join(f"{name} {elapsed:.1f}s" for name, elapsed in self.done)


def changes(output: str) -> int | None:
    """Changed operations from pyinfra's "Grand total" row (Success column; '-' is 0)."""
    for line in reversed(_ANSI.sub("", output).splitlines()):
        if "Grand total" in line:
            cells = [c.strip() for c in re.split(r"\s{2,}|\|", line) if c.strip()]
            try:
                success = cells[cells.index("Grand total") + 2]
            except (ValueError, IndexError):
                return None
            return 0 if success == "-" else int(success) if success.isdigit() else None
    return None


def deploy(system: str, host: str, state: Path, env_file: Path) -> tuple[bool, int | None]:
    """Apply deploys/<system>.py to the demo host, streaming pyinfra with phase timings."""
    cmd = [sys.executable, "-m", "pyinfra", "inventory.py", f"deploys/{system}.py",
           "--limit", host, "-y"]
    env = {**os.environ, "DEPLOY_ENV": "test", "INFRA_HOSTS_DIR": str(state),
           "INFRA_ENV_FILE": str(env_file), "PYINFRA_PROGRESS": "off"}
    phases, output = Phases(), []
    say(f"deploying {system} to {host} (pyinfra) ...")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        phases.feed(line)  # first: a new phase's line follows the previous one's duration
        sys.stdout.write(line)
        sys.stdout.flush()
        output.append(line)
    phases.finish()
    ok = proc.wait() == 0
    say(f"deploy {'finished' if ok else 'FAILED'} in {time.monotonic() - start:.1f}s: {phases.summary()}")
    return ok, changes("".join(output))


def https_answer(ctx: Context, name: str, path: str) -> str:
    import httpx

    context = ssl.create_default_context(cafile=str(ctx.cluster.acme_root_file()))
    try:
        with httpx.Client(verify=context, timeout=10) as client:
            r = client.get(f"https://{ctx.host.address}{path}", headers={"Host": name},
                           extensions={"sni_hostname": name})
        return f"HTTP {r.status_code} {r.text[:120]!r}"
    except httpx.HTTPError as exc:
        return f"error: {exc}"


def run_demo(system: str, state: Path, expect_unchanged: bool) -> int:
    spec = DEMOS.get(system, Demo())
    groups, role_data = production_role(system)
    groups = list(spec.groups or groups)
    docker_engine = "docker_host" in groups
    name = f"{system}-demo"
    ensure_engine()  # before judging the recorded cluster: an engine that is down is not "gone"
    demo = cluster(state)
    first = name not in demo.hosts
    if first:
        say(f"booting host {name} (groups {','.join(groups)}{', Docker engine inside' if docker_engine else ''}) ...")
    start = time.monotonic()
    host = demo.add_host(name, groups=groups, docker=docker_engine, os=spec.os)
    if first:
        say(f"host {name} up in {time.monotonic() - start:.1f}s")
    for public in spec.names:
        demo.set_record(public, host.address)
    env_file = secrets_file(state, [*environments.required_secrets([system]).get(system, []), *spec.secrets])
    ctx = Context(demo, host, state, first, env_file)
    host.data = {**role_data, **spec.data(ctx)}  # the demo's data, read by inventory.py
    demo.write_inventory()
    ok, changed = deploy(system, name, state, env_file)
    if not ok:
        print(f"demo: the {system} deploy failed (pyinfra's output is above)", file=sys.stderr)
        return 1
    print(f"\n=== demo: {system} on {name} ({host.address}) ===")
    print(f"changes: {'unknown' if changed is None else changed}"
          + (" (first deploy to a new host)" if first else " (a re-run on the same host with the same data)"))
    print(f"again:   make demo{'' if system == DEFAULT else f' DEMO={system}'}   (0 changes), or the same run by hand:")
    print(f"         {again_command(system, name, state, env_file)}")
    print(f"host:    ssh -F {rel(demo.ssh_config_path)} {name}")
    print(f"remove:  make hosts-down   (state and secrets stay in {rel(state)}; make clean forgets them)")
    for public, path in spec.urls:
        print(f"https://{public}{path}  ->  {https_answer(ctx, public, path)}")
    for url in spec.local_urls:
        answer = host.exec(f"curl -sS --max-time 10 {url}", check=False)
        print(f"{url} (inside the host)  ->  {' '.join((answer.stdout or answer.stderr).split())[:160]}")
    if expect_unchanged and changed != 0:
        print(f"demo: expected 0 changes on this re-run, pyinfra reported {changed}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", nargs="?", default=os.environ.get("DEMO") or DEFAULT)
    parser.add_argument("--expect-unchanged", action="store_true",
                        help="exit 1 unless the deploy reports 0 changes (CI's second run)")
    args = parser.parse_args(argv)
    systems = known_systems()
    if args.system not in systems:
        print(f"demo: unknown system {args.system!r}; choose one of {', '.join(systems)}", file=sys.stderr)
        return 2
    state = DEMO_DIR
    state.mkdir(parents=True, exist_ok=True)
    try:
        return run_demo(args.system, state, args.expect_unchanged)
    except (HarnessError, ConfigError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted (the cluster stays up; make hosts-down removes it)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
