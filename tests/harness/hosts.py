"""A cluster of disposable systemd test hosts on a private Docker network.

One `Cluster` = one run id = one bridge network + an optional helper container (dnsmasq
and pebble) + N hosts reachable over SSH on 127.0.0.1. Every object carries the label
`infra-test=<run_id>`, and their ids are written to `.hosts/state.json` as soon as they
exist, so `python -m tests.harness down` (another process) removes exactly this run's
containers and network, by id, and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import helpers
from ._util import HOSTS_DIR, LABEL, HarnessError, docker, file_lock, log, timed, wait_for
from .engine import cgroup_version, ensure_engine
from .image import ensure_image, image_tag
from .keys import ensure_keypair

BOOT_TIMEOUT = 90.0
SSH_TIMEOUT = 30.0
DOCKER_IN_HOST_TIMEOUT = 90.0
HELPER_NAME = "helper"
MAX_PARALLEL_BOOTS = 4
OS_VARIANTS = {"debian12": "base", "debian13": "trixie"}  # HostSpec.os -> image variant


@dataclass(frozen=True)
class HostSpec:
    """What a test asks for. docker: False, True/"v2" (engine + compose v1 and v2), "v1"."""

    name: str
    groups: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    docker: bool | str = False
    publish: tuple[int, ...] = ()  # extra container ports published on 127.0.0.1
    os: str = "debian12"  # base image: "debian12" or "debian13" (docker: v2 only there)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?", self.name):
            raise HarnessError(f"host name {self.name!r}: use lowercase letters, digits and '-' "
                               "(it becomes the hostname and part of the container name)")

    @property
    def variant(self) -> str:
        if self.os not in OS_VARIANTS:
            raise HarnessError(f"host {self.name}: os must be one of {sorted(OS_VARIANTS)}, not {self.os!r}")
        if self.docker in (False, None, ""):
            return OS_VARIANTS[self.os]
        if self.os == "debian13" and self.docker in (True, "v2"):
            return "docker-trixie"  # Debian 13's own compose package is v2
        if self.os != "debian12":
            raise HarnessError(f"host {self.name}: docker hosts exist for debian12 (v1, v2) and debian13 (v2)")
        if self.docker in (True, "v2"):
            return "docker"
        if self.docker == "v1":
            return "docker-v1"
        raise HarnessError(f"host {self.name}: docker must be False, True, 'v1' or 'v2', "
                           f"not {self.docker!r}")


@dataclass
class Host:
    """A running test host. `exec` uses `docker exec` (fast, no SSH) for test plumbing."""

    name: str
    container_id: str
    container_name: str
    address: str
    ssh_port: int
    key_path: str
    image: str
    groups: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    docker: bool | str = False
    ports: dict[str, int] = field(default_factory=dict)  # "80" -> 127.0.0.1 port

    # -- running things inside
    def exec(self, command: str | list[str], *, check: bool = True, timeout: float = 120,
             input: str | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `command` (a shell string or argv list) in the host as root."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        envargs = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        interactive = ["-i"] if input is not None else []
        return docker("exec", *interactive, *envargs, self.container_id, *argv, check=check,
                      timeout=timeout, input=input, what=f"exec on {self.name}: {command!r:.80}")

    def write_file(self, path: str, content: str, mode: str = "0644") -> None:
        """Put a file on the host (e.g. the ACME CA bundle certbot must trust)."""
        q = shlex.quote(path)
        self.exec(f"mkdir -p \"$(dirname {q})\" && cat > {q} && chmod {mode} {q}", input=content)

    def load_image(self, image: str, timeout: float = 600) -> None:
        """`docker save IMAGE | docker exec -i HOST docker load` (no registry needed)."""
        if not self.docker:
            raise HarnessError(f"host {self.name} has no docker engine (start it with docker=True)")
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        try:
            load = subprocess.run(["docker", "exec", "-i", self.container_id, "docker", "load"],
                                  stdin=save.stdout, capture_output=True, text=True, timeout=timeout)
        finally:
            save.stdout.close()  # type: ignore[union-attr]
            save.wait(timeout=60)
        if save.returncode or load.returncode:
            raise HarnessError(f"loading {image} into {self.name} failed: {load.stderr.strip()}")

    # -- connecting
    @property
    def ssh_url(self) -> str:
        return f"paramiko://root@127.0.0.1:{self.ssh_port}"

    def testinfra(self) -> Any:
        """A testinfra host over SSH with the harness key (what pyinfra will use too)."""
        import testinfra

        # testinfra cannot load a known_hosts file, so it would warn on every host: skip the
        # host-key check for 127.0.0.1 here only (pyinfra and ssh use .hosts/known_hosts)
        config = Path(self.key_path).parent / "testinfra_ssh_config"
        if not config.exists():
            config.write_text("Host 127.0.0.1\n  StrictHostKeyChecking no\n")
        return testinfra.get_host(self.ssh_url, ssh_identity_file=self.key_path,
                                  ssh_config=str(config))

    def port(self, container_port: int) -> int:
        """The 127.0.0.1 port a `publish=` container port is reachable on."""
        try:
            return self.ports[str(container_port)]
        except KeyError:
            raise HarnessError(f"host {self.name} does not publish port {container_port}; "
                               f"add publish=({container_port},) to add_host") from None

    # -- diagnostics
    def diagnostics(self, lines: int = 30) -> str:
        """Last docker logs + journal + failed units: attached to boot errors."""
        logs = docker("logs", "--tail", str(lines), self.container_id, check=False)
        out = [f"--- docker logs {self.container_name} (last {lines}) ---", logs.stdout + logs.stderr]
        j = self.exec('echo "system state: $(systemctl is-system-running)"; '
                      "systemctl --failed --no-pager; systemctl list-jobs --no-pager | head -15; "
                      f"journalctl -n {lines} --no-pager", check=False, timeout=20)
        out += [f"--- failed units + journal on {self.name} ---", j.stdout + j.stderr]
        return "\n".join(out)

    def inventory_entry(self) -> dict[str, Any]:
        return {"name": self.name, "container_id": self.container_id, "ssh_hostname": "127.0.0.1",
                "ssh_port": self.ssh_port, "ssh_user": "root", "ssh_key": self.key_path,
                "address": self.address, "groups": list(self.groups), "data": dict(self.data)}


class Cluster:
    """Hosts + helper services for one test run; see the module docstring."""

    def __init__(self, run_id: str | None = None, *, hosts_dir: Path = HOSTS_DIR,
                 owner: str = "cli") -> None:
        self.run_id = run_id or f"{time.strftime('%H%M%S')}{secrets.token_hex(2)}"
        self.hosts_dir = Path(hosts_dir)
        self.owner = owner
        self.pid = os.getpid()
        self.network: dict[str, str] | None = None
        self.helper: Host | None = None
        self.dns_enabled = False
        self.acme_enabled = False
        self.hosts: dict[str, Host] = {}
        self.records: dict[str, str] = {}
        self._lock = threading.RLock()
        self._host_locks: dict[str, threading.Lock] = {}
        self._extra_ids: list[str] = []  # every container id, recorded right after `docker run`
        self._host_keys: dict[str, list[str]] = {}  # name -> ["ssh-ed25519 AAAA...", ...]
        self.key_path, self.public_key = ensure_keypair(self.hosts_dir)

    # ------------------------------------------------------------ paths
    @property
    def state_path(self) -> Path:
        return self.hosts_dir / "state.json"

    @property
    def inventory_path(self) -> Path:
        return self.hosts_dir / "inventory.json"

    @property
    def known_hosts_path(self) -> Path:
        return self.hosts_dir / "known_hosts"

    @property
    def ssh_config_path(self) -> Path:
        return self.hosts_dir / "ssh_config"

    # ------------------------------------------------------------ lifecycle
    def start(self, *, dns: bool = True, acme: bool = True) -> Cluster:
        """Create the network and (if asked) the helper. acme implies dns."""
        ensure_engine()
        self.dns_enabled, self.acme_enabled = dns or acme, acme
        helper_image = ensure_image("helper") if self.dns_enabled else None
        ensure_image("base")
        with timed(f"cluster {self.run_id} network{' + helper' if helper_image else ''} ready"):
            with file_lock(f"state-{self.hosts_dir.name}"):  # two `up`s must not both claim .hosts/
                _claim_state_dir(self.state_path)
                self._create_network()
            if helper_image:
                self._start_helper(helper_image)
        self.write_inventory()
        return self

    def add_host(self, name: str, groups: list[str] | tuple[str, ...] = (), *,
                 data: dict[str, Any] | None = None, docker: bool | str = False,
                 publish: tuple[int, ...] | list[int] = (), os: str = "debian12") -> Host:
        """Boot host `name` (or return it if this cluster already has it)."""
        return self.add_hosts([HostSpec(name, tuple(groups), dict(data or {}), docker,
                                        tuple(publish), os)])[0]

    def add_hosts(self, specs: list[HostSpec]) -> list[Host]:
        """Boot several hosts concurrently; already-running names are returned as they are."""
        if self.network is None:
            raise HarnessError("call Cluster.start() before adding hosts")
        if any(s.name == HELPER_NAME for s in specs):
            raise HarnessError(f"host name {HELPER_NAME!r} is reserved for the DNS/ACME helper")
        for variant in {s.variant for s in specs}:
            ensure_image(variant)  # build sequentially: builds already use both cores
        with ThreadPoolExecutor(max_workers=MAX_PARALLEL_BOOTS) as pool:
            hosts = list(pool.map(self._get_or_boot, specs))
        self.write_inventory()
        return hosts

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise HarnessError(f"no host {name!r} in cluster {self.run_id}; "
                               f"have {sorted(self.hosts)}") from None

    def remove_host(self, name: str) -> None:
        """Remove one host (by container id) and forget it; the cluster stays up.

        Modules call this for hosts only they use, so a session does not pile up
        Docker-in-Docker hosts while later modules run.
        """
        with self._lock:
            host = self.hosts.pop(name, None)
            self._host_keys.pop(name, None)
            self._host_locks.pop(name, None)
        if host is None:
            return
        with timed(f"host {name} removed"):
            docker("rm", "-f", "-v", host.container_id, check=False, timeout=180)
        with self._lock:
            self._extra_ids = [i for i in self._extra_ids if i != host.container_id]
            self._save_state()
        self.write_inventory()

    def reboot_host(self, name: str) -> Host:
        """Power-cycle one host (`docker restart`): /run is emptied, processes die, units
        start again at boot. Its published ports and address are read anew."""
        host = self.host(name)
        with timed(f"host {name} rebooted"):
            docker("restart", "-t", "5", host.container_id, timeout=180, what=f"restart {name}")
            info = json.loads(docker("inspect", host.container_id).stdout)[0]
            net = info["NetworkSettings"]
            ports = {k.split("/")[0]: int(v[0]["HostPort"]) for k, v in net["Ports"].items() if v}
            host.ssh_port = ports["22"]
            host.ports = {k: v for k, v in ports.items() if k != "22"}
            host.address = net["Networks"][self.network["name"]]["IPAddress"]
            self._wait_booted(host)
            if host.docker:
                self._wait_docker_in_host(host)
            _wait_for_ssh(host)
        self._save_state()
        self.write_inventory()
        return host

    def down(self) -> None:
        """Remove this run's containers and network (by id) and its state files."""
        ids = self._all_ids()
        labelled = docker("ps", "-aq", "--no-trunc", "--filter", f"label={LABEL}={self.run_id}",
                          check=False).stdout.split()
        ids = list(dict.fromkeys(ids + labelled))
        if ids or self.network:
            with timed(f"cluster {self.run_id} removed ({len(ids)} containers)"):
                if ids:
                    docker("rm", "-f", "-v", *ids, check=False, timeout=180)
                if self.network:
                    docker("network", "rm", self.network["id"], check=False, timeout=60)
        if self._owns_state_dir():  # never delete another live cluster's files
            for path in (self.state_path, self.inventory_path, self.known_hosts_path,
                         self.ssh_config_path, self.acme_ca_bundle,
                         self.hosts_dir / "pebble-root.pem"):
                path.unlink(missing_ok=True)
        self.hosts.clear()
        self.helper = None
        self.network = None

    def _owns_state_dir(self) -> bool:
        try:
            return json.loads(self.state_path.read_text()).get("run_id") == self.run_id
        except (OSError, ValueError):
            return False

    def _all_ids(self) -> list[str]:
        ids = [h.container_id for h in self.hosts.values()]
        ids += [self.helper.container_id] if self.helper else []
        return list(dict.fromkeys(ids + self._extra_ids))

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ------------------------------------------------------------ DNS
    @property
    def dns_address(self) -> str | None:
        return self.helper.address if self.helper and self.dns_enabled else None

    def set_record(self, name: str, ip: str, timeout: float = 10) -> None:
        """Make `name` resolve to `ip` for every host (returns once dnsmasq answers it)."""
        helper = self._require_dns()
        with self._lock:
            self.records[name] = ip
            helpers.write_records(helper.container_id, self.records)
            self._save_state()
        helpers.wait_for_answer(helper.container_id, helper.address, name, want=ip, timeout=timeout)

    def remove_record(self, name: str, timeout: float = 10) -> None:
        """Forget `name` (returns once dnsmasq no longer answers the old address)."""
        helper = self._require_dns()
        with self._lock:
            old = self.records.pop(name, None)
            helpers.write_records(helper.container_id, self.records)
            self._save_state()
        if old:
            helpers.wait_for_answer(helper.container_id, helper.address, name, absent=old,
                                    timeout=timeout)

    def resolve(self, name: str) -> list[str]:
        """What dnsmasq answers for `name` right now (A records)."""
        helper = self._require_dns()
        return helpers.query(helper.container_id, helper.address, name)

    def _require_dns(self) -> Host:
        if not (self.helper and self.dns_enabled):
            raise HarnessError("this cluster has no DNS helper: start(dns=True)")
        return self.helper

    # ------------------------------------------------------------ ACME
    @property
    def acme_directory(self) -> str | None:
        if not (self.helper and self.acme_enabled):
            return None
        return f"https://{self.helper.address}:{helpers.ACME_PORT}/dir"

    @property
    def acme_ca_bundle(self) -> Path:
        """PEM of the CA that signed pebble's own HTTPS listener (REQUESTS_CA_BUNDLE)."""
        return self.hosts_dir / "pebble-ca.pem"

    def acme_root_pem(self) -> str:
        """PEM of the root that signs certificates pebble issues (fetched from /roots/0)."""
        if not (self.helper and self.acme_enabled):
            raise HarnessError("this cluster has no ACME helper: start(acme=True)")
        return helpers.acme_root_pem(self.helper.container_id)

    def acme_root_file(self) -> Path:
        """acme_root_pem() written to .hosts/pebble-root.pem (for httpx/curl `verify`)."""
        path = self.hosts_dir / "pebble-root.pem"
        path.write_text(self.acme_root_pem())
        return path

    def acme_ssl_context(self):
        """An ssl.SSLContext trusting pebble-issued certificates (for httpx `verify=`)."""
        import ssl

        return ssl.create_default_context(cadata=self.acme_root_pem())

    # ------------------------------------------------------------ inventory / state
    def write_inventory(self) -> Path:
        """Write .hosts/inventory.json (read by inventory.py when DEPLOY_ENV=test)."""
        with self._lock:
            self.hosts_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.inventory_path, self.inventory())
            self._write_ssh_files()
        return self.inventory_path

    def inventory(self) -> dict[str, Any]:
        helper = self.helper
        dns = {"address": helper.address, "container_id": helper.container_id} \
            if helper and self.dns_enabled else None
        acme = {"directory": self.acme_directory, "ca_bundle": str(self.acme_ca_bundle),
                "address": helper.address, "container_id": helper.container_id} \
            if helper and self.acme_enabled else None
        return {"hosts": [self.hosts[n].inventory_entry() for n in sorted(self.hosts)],
                "dns": dns, "acme": acme, "network": self.network}

    def _write_ssh_files(self) -> None:
        """known_hosts (for pyinfra's ssh_known_hosts_file) and an ssh_config for humans."""
        known, config = [], []
        for h in [*self.hosts.values(), *([self.helper] if self.helper else [])]:
            for key in self._host_keys.get(h.name, []):
                known.append(f"[127.0.0.1]:{h.ssh_port} {key}")
            config.append(f"Host {h.name}\n  HostName 127.0.0.1\n  Port {h.ssh_port}\n  User root\n"
                          f"  IdentityFile {self.key_path}\n  IdentitiesOnly yes\n"
                          f"  UserKnownHostsFile {self.known_hosts_path}\n"
                          f"  StrictHostKeyChecking yes\n")
        self.known_hosts_path.write_text("".join(f"{line}\n" for line in known))
        self.ssh_config_path.write_text("\n".join(config))

    def _save_state(self) -> None:
        with self._lock:
            state = {"run_id": self.run_id, "owner": self.owner, "pid": self.pid,
                     "network": self.network, "dns": self.dns_enabled, "acme": self.acme_enabled,
                     "helper": asdict(self.helper) if self.helper else None,
                     "hosts": [asdict(h) for h in self.hosts.values()],
                     "host_keys": self._host_keys, "records": self.records,
                     "extra_ids": self._extra_ids}
            self.hosts_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.state_path, state)

    @classmethod
    def load(cls, hosts_dir: Path = HOSTS_DIR) -> Cluster | None:
        """The cluster recorded in .hosts/state.json (possibly from another process)."""
        path = Path(hosts_dir) / "state.json"
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        self = cls(state["run_id"], hosts_dir=hosts_dir, owner=state.get("owner", "cli"))
        self.pid = state.get("pid", 0)
        self.network = state["network"]
        self.dns_enabled, self.acme_enabled = state["dns"], state["acme"]
        self.helper = Host(**state["helper"]) if state["helper"] else None
        self.hosts = {h["name"]: Host(**h) for h in state["hosts"]}
        self._host_keys = state.get("host_keys", {})
        self.records = state.get("records", {})
        self._extra_ids = state.get("extra_ids", [])
        return self

    # ------------------------------------------------------------ internals
    def _create_network(self) -> None:
        name = f"infra-test-{self.run_id}"
        net_id = docker("network", "create", "--label", f"{LABEL}={self.run_id}", name,
                        what="create the cluster network").stdout.strip()
        self.network = {"name": name, "id": net_id, "subnet": ""}
        self._save_state()
        info = json.loads(docker("network", "inspect", net_id).stdout)[0]
        self.network["subnet"] = (info["IPAM"]["Config"] or [{}])[0].get("Subnet", "")
        self._save_state()

    def _start_helper(self, image: str) -> None:
        spec = HostSpec(HELPER_NAME)
        with timed("helper (dnsmasq" + (" + pebble)" if self.acme_enabled else ")") + " ready"):
            self.helper = self._run_container(spec, image, dns=None)
            self._wait_booted(self.helper)
            self._install_key(self.helper)  # so `ssh -F .hosts/ssh_config helper` works
            self._record_host_keys(self.helper)
            helpers.setup_dns(self.helper.container_id)
            if self.acme_enabled:
                ca = helpers.setup_acme(self.helper.container_id, self.helper.address,
                                        HELPER_NAME, self.run_id)
                self.acme_ca_bundle.write_text(ca)
        self._save_state()

    def _get_or_boot(self, spec: HostSpec) -> Host:
        """Return the running host `spec.name` or boot it; one boot per name per cluster."""
        with self._lock:
            lock = self._host_locks.setdefault(spec.name, threading.Lock())
        with lock:
            existing = self.hosts.get(spec.name)
            if existing is None:
                return self._boot(spec)
            if existing.image != image_tag(spec.variant):
                raise HarnessError(f"host {spec.name} already runs the {existing.image} image; "
                                   f"cannot re-add it with docker={spec.docker!r}, os={spec.os!r}")
            return existing

    def _boot(self, spec: HostSpec) -> Host:
        start = time.monotonic()
        host = self._run_container(spec, ensure_image(spec.variant), dns=self.dns_address)
        try:
            self._wait_booted(host)
            self._install_key(host)
            if host.docker:
                self._wait_docker_in_host(host)
            _wait_for_ssh(host)
            self._record_host_keys(host)
        except BaseException:
            # diagnostics are in the error already; free the name so a retry can boot it
            docker("rm", "-f", "-v", host.container_id, check=False)
            raise
        with self._lock:
            self.hosts[host.name] = host
            self._save_state()
        log(f"host {spec.name} ({spec.variant}) up in {time.monotonic() - start:.1f}s: "
            f"ssh -F {self.ssh_config_path} {spec.name}  (127.0.0.1:{host.ssh_port}, {host.address})")
        return host

    def _run_container(self, spec: HostSpec, image: str, dns: str | None) -> Host:
        """`docker run -d` a systemd container on the cluster network; return its Host."""
        assert self.network is not None
        cname = f"infra-{self.run_id}-{spec.name}"
        args = ["run", "-d", "--name", cname, "--hostname", spec.name,
                "--network", self.network["id"], "--network-alias", spec.name,
                "--label", f"{LABEL}={self.run_id}", "--label", f"{LABEL}.host={spec.name}",
                "--stop-signal", "SIGRTMIN+3",
                "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
                "--security-opt", "seccomp=unconfined",
                "--tmpfs", "/run", "--tmpfs", "/run/lock",
                "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "-p", "127.0.0.1::22"]
        args += [a for p in spec.publish for a in ("-p", f"127.0.0.1::{p}")]
        # The host's own engine keeps its images on an anonymous volume (removed by `rm -v`):
        # a plain directory under the outer engine, so it can use overlay2. On the
        # container's overlay root it falls back to vfs, which copies every layer in full
        # and makes builds and loads many times slower.
        args += ["-v", "/var/lib/docker"] if spec.docker else []
        args += ["--cgroupns=host"] if _cgroup_v2() else []
        args += ["--dns", dns] if dns else []
        proc = docker(*args, image, "/sbin/init", check=False, what=f"start container {cname}")
        cid = proc.stdout.strip()
        if proc.returncode != 0:
            if cid:
                self._extra_ids.append(cid)
            raise HarnessError(f"docker run for host {spec.name} failed: {proc.stderr.strip()}")
        with self._lock:
            self._extra_ids.append(cid)  # recorded before anything else can fail
            self._save_state()
        info = json.loads(docker("inspect", cid).stdout)[0]
        net = info["NetworkSettings"]
        ports = {k.split("/")[0]: int(v[0]["HostPort"]) for k, v in net["Ports"].items() if v}
        return Host(name=spec.name, container_id=cid, container_name=cname,
                    address=net["Networks"][self.network["name"]]["IPAddress"],
                    ssh_port=ports["22"], key_path=str(self.key_path), image=image,
                    groups=list(spec.groups), data=dict(spec.data), docker=spec.docker,
                    ports={k: v for k, v in ports.items() if k != "22"})

    def _wait_booted(self, host: Host) -> None:
        """Wait for systemd to finish booting (running, or degraded with a warning)."""
        def state() -> str | None:
            out = host.exec(["systemctl", "is-system-running"], check=False, timeout=15).stdout.strip()
            return out if out in ("running", "degraded") else None

        result = wait_for(state, timeout=BOOT_TIMEOUT, what=f"systemd to boot on {host.name}",
                          on_timeout=host.diagnostics)
        if result == "degraded":
            failed = host.exec("systemctl --failed --no-legend --plain | cut -d' ' -f1",
                               check=False).stdout.split()
            log(f"warning: {host.name} booted degraded; failed units: {', '.join(failed)}")

    def _record_host_keys(self, host: Host) -> None:
        """Remember the host's SSH host keys for .hosts/known_hosts."""
        keys = host.exec("cat /etc/ssh/ssh_host_*_key.pub | cut -d' ' -f1,2").stdout.splitlines()
        with self._lock:
            self._host_keys[host.name] = keys

    def _install_key(self, host: Host) -> None:
        host.exec("umask 077 && mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys",
                  input=self.public_key + "\n")

    def _wait_docker_in_host(self, host: Host) -> None:
        wait_for(lambda: host.exec("docker info >/dev/null 2>&1", check=False).returncode == 0,
                 timeout=DOCKER_IN_HOST_TIMEOUT, interval=0.5,
                 what=f"the docker engine inside {host.name}",
                 on_timeout=lambda: host.exec("journalctl -u docker -n 30 --no-pager",
                                              check=False).stdout)


def _wait_for_ssh(host: Host) -> None:
    """sshd answers with its banner on the published port (docker-proxy alone doesn't)."""
    def banner() -> bool:
        with socket.create_connection(("127.0.0.1", host.ssh_port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"SSH-")

    wait_for(banner, timeout=SSH_TIMEOUT, what=f"SSH on {host.name} (127.0.0.1:{host.ssh_port})",
             on_timeout=lambda: host.exec("systemctl status ssh --no-pager", check=False).stdout)


_CGROUP_V2: bool | None = None


def _cgroup_v2() -> bool:
    """cgroup v2 engines need --cgroupns=host for systemd in a container (asked once)."""
    global _CGROUP_V2
    if _CGROUP_V2 is None:
        _CGROUP_V2 = cgroup_version() == 2
    return _CGROUP_V2


def _claim_state_dir(state_path: Path) -> None:
    """Take over the state dir unless another cluster in it is still in use.

    In use: its process is alive (a pytest session, or an `up` still starting), or a CLI
    `up` left containers running (they are the user's until `down`). A dead pytest
    session's cluster is an orphan and is removed here.
    """
    old = Cluster.load(state_path.parent) if state_path.exists() else None
    if old is None:
        return
    if _pid_alive(old.pid):
        raise HarnessError(
            f"{state_path.parent} is in use by {old.owner} process {old.pid} (cluster {old.run_id}); "
            "wait for it, or give this run its own directory with INFRA_HOSTS_DIR=/some/dir "
            "(inventory.py must read the same variable)")
    live = [cid for cid in old._all_ids() if _container_exists(cid)]
    if live and old.owner != "pytest":
        raise HarnessError(f"test cluster {old.run_id} from `{old.owner}` is still up "
                           f"({len(live)} containers); run `python -m tests.harness down` first")
    if live:
        log(f"removing orphaned test cluster {old.run_id} (its pytest process {old.pid} is gone)")
    old.down()


def _container_exists(cid: str) -> bool:
    return docker("inspect", "--format", "{{.Id}}", cid, check=False, timeout=30).returncode == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
