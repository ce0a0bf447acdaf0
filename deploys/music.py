"""Music Assistant + OAuth server (Alexa) on a native VM: the plan as an idempotent deploy.

    pyinfra inventory.py deploys/music.py                  # disposable test hosts
    DEPLOY_ENV=prod pyinfra inventory.py deploys/music.py  # dev.jasonhollis.com

Phases (as in the plan): 1 preflight (OS, disk, memory, ports, secrets, DNS for both
names) -> 2 layout (user, directories, apt) -> 3 Music Assistant (own venv, pinned pip
spec, hardened unit) -> 4 OAuth server (user's code, venv, secrets in a 0600
EnvironmentFile) -> 5 nginx + certbot (HTTP->HTTPS, one TLS vhost per name, WebSocket)
-> health gates (local, then HTTPS from outside) -> health-check timer.

Upgrades: each app lives in releases/<id> (id = hash of what is installed); a switch
keeps the previous release and backs up the data dir first. If a health gate fails
after a switch, the previous release is put back, restarted, and the run fails with the
reason. `music_state = "absent"` is the plan's "complete rollback" (data kept by default).
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import re
import shlex
import tarfile
import time
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.context import ctx_host, state
from pyinfra.facts.files import File, Link
from pyinfra.operations import apt, files, systemd

from packaging.requirements import InvalidRequirement, Requirement

from deploys import secrets
from deploys.parts import deploy_lock
from deploys.errors import ConfigError, PreflightFailed
from deploys.operations import poll
from deploys.parts.health import external_https_check, health_check_timer, http_check, unit_report
from deploys.parts.firewall import firewall
from deploys.parts.nginx import auth_file_path, basic_auth_file, remove_nginx_site
from deploys.parts.preflight import preflight
from deploys.parts.service import ServiceSpec, hardened_service, restart_command, service_defaults, system_user
from deploys.parts.tls import https_site
from deploys.templating import render_io
from facts.music import MusicAssistantSettings, MusicHostTools, core_value, ffmpeg_problem, python_problem

REPO = Path(__file__).resolve().parent.parent
MA_SERVICE = "music-assistant"
OAUTH_SERVICE = "oauth-server"
HEALTH_UNIT = "music-health-check"
_SKIP_NAMES = {"__pycache__", ".git", ".venv", "venv", ".pytest_cache"}


# ----------------------------------------------------------------------------- helpers


def _local(path: str | None) -> Path | None:
    """A local path from data: relative paths are relative to the repository."""
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO / p


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_files(src: Path) -> list[tuple[Path, str]]:
    """(local file, relative path) of the user's code; never .env files or caches."""
    result = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in _SKIP_NAMES for part in rel.parts) or path.is_dir():
            continue
        if path.name.startswith(".env") or path.suffix == ".pyc":
            continue
        result.append((path, rel.as_posix()))
    return result


def release_id(*parts: object) -> str:
    """Stable id of what a release installs: same inputs, same release, no rebuild."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode() + b"\0")
    return digest.hexdigest()[:12]


def has_requirements(path: Path) -> bool:
    """requirements.txt with at least one requirement (comments/blank lines don't count)."""
    if not path.exists():
        return False
    return any(line.strip() and not line.strip().startswith("#") for line in path.read_text().splitlines())


def haos_settings_json(backup: Path) -> bytes | None:
    """settings.json of the Music Assistant add-on inside a HAOS backup (.tar), or None.

    MA 2.x keeps its settings in `<data>/settings.json` (server/controllers/config.py);
    the add-on's `config.json` is the Supervisor's add-on manifest, which MA never reads.
    A HAOS backup is a tar of per-add-on tarballs (`<slug>.tar.gz`); the add-on's data
    sits under `data/`. The first settings.json in an archive whose name mentions music
    assistant (or `mass`) wins.
    """

    def wanted(name: str) -> bool:
        low = name.lower()
        return any(key in low for key in ("music_assistant", "music-assistant", "mass"))

    def search(archive: tarfile.TarFile, inside_wanted: bool) -> bytes | None:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            if member.name.endswith((".tar.gz", ".tgz", ".tar")):
                with tarfile.open(fileobj=archive.extractfile(member)) as inner:
                    found = search(inner, inside_wanted or wanted(member.name))
                if found is not None:
                    return found
            elif Path(member.name).name == "settings.json" and (inside_wanted or wanted(member.name)):
                return archive.extractfile(member).read()
        return None

    with tarfile.open(backup) as outer:
        return search(outer, False)


# ----------------------------------------------------------------------------- operations


@operation()
def put_if_absent(dest: str, content: HiddenValue, user: str = "root", group: str = "root", mode: str = "640"):
    """Upload `content` to `dest` only when `dest` does not exist (one-time imports).

    `content` is a HiddenValue: pyinfra prints operation arguments, and an imported
    settings.json holds MA's provider credentials (with the server_id that decrypts them)."""
    if host.get_fact(File, path=dest):
        host.noop(f"{dest} exists: not overwritten")
        return
    raw = content.unmask() if isinstance(content, HiddenValue) else content
    yield FileUploadCommand(io.BytesIO(raw), dest)
    yield StringCommand("chown", f"{user}:{group}", QuoteString(dest), "&&", "chmod", mode, QuoteString(dest))


def _link_target(path: str) -> str | None:
    link = host.get_fact(Link, path=path)
    return link.get("link_target") if link else None


def _build_release(release: str, uploads, pip_args):
    """Fresh release dir, uploads, venv, pip install; `.complete` written last."""
    q = QuoteString(release)
    yield StringCommand("rm", "-rf", q, "&&", "mkdir", "-p", q)
    for local, rel in uploads:
        target = f"{release}/{rel}"
        yield StringCommand("mkdir", "-p", QuoteString(target.rsplit("/", 1)[0]))
        yield FileUploadCommand(str(local), target)
    yield StringCommand("chmod", "-R", "u=rwX,go=rX", q)
    yield StringCommand("python3", "-m", "venv", QuoteString(f"{release}/venv"))
    if pip_args:
        args = [QuoteString(a.replace("{release}", release)) for a in pip_args]
        yield StringCommand(
            QuoteString(f"{release}/venv/bin/pip"), "install", "--quiet", "--disable-pip-version-check", *args
        )
    yield StringCommand("touch", QuoteString(f"{release}/.complete"))


# Runs on the host (python3): a consistent copy of a live data dir. SQLite files go
# through SQLite's backup API (a tar of a database being written can be torn, and GNU
# tar fails on a file that changes while read); -wal/-shm/-journal files are folded in
# by that API. Then one tar.gz, renamed into place when complete.
_BACKUP_SCRIPT = r"""
import os, shutil, sqlite3, sys, tarfile, tempfile
data, archive = sys.argv[1], sys.argv[2]
stage = tempfile.mkdtemp(prefix=".stage-", dir=os.path.dirname(archive))
try:
    for root, dirs, files in os.walk(data):
        rel = os.path.relpath(root, data)
        os.makedirs(os.path.join(stage, rel), exist_ok=True)
        for name in files:
            src, dst = os.path.join(root, name), os.path.join(stage, rel, name)
            if name.endswith(("-wal", "-shm", "-journal")):
                continue
            with open(src, "rb") as fh:
                head = fh.read(16)
            if head == b"SQLite format 3\0":
                source, target = sqlite3.connect(src, timeout=30), sqlite3.connect(dst)
                source.backup(target)
                target.close(); source.close()
            else:
                shutil.copy2(src, dst)
    with tarfile.open(archive + ".part", "w:gz") as tar:
        tar.add(stage, arcname=".")
    os.replace(archive + ".part", archive)
finally:
    shutil.rmtree(stage, ignore_errors=True)
"""


def backup_name(stamp: str, rid: str) -> str:
    return f"data-{stamp}-before-{rid}.tar.gz"


def _backup_data(base: str, data_dir: str, rid: str, keep: int):
    """Consistent backup of `data_dir` before switching to `rid`; keeps the `keep` newest."""
    backups = f"{base}/backups"
    archive = f"{backups}/{backup_name(time.strftime('%Y%m%dT%H%M%S'), rid)}"
    return StringCommand(
        "if [ -d", QuoteString(data_dir), "]; then mkdir -p", QuoteString(backups), "&&",
        "chmod 700", QuoteString(backups), "&&",
        "python3 -c", QuoteString(_BACKUP_SCRIPT), QuoteString(data_dir), QuoteString(archive), "&&",
        "ln -sfn", QuoteString(Path(archive).name), QuoteString(f"{backups}/latest"), "&&",
        f"(cd {shlex.quote(backups)} && ls -1t data-*.tar.gz | tail -n +{int(keep) + 1} | xargs -r rm -f); fi",
    )


def restore_data_commands(base: str, data_dir: str, rid: str, service: str, user: str) -> list:
    """Shell words that put back the backup taken before switching to `rid` (if one is
    there): MA stopped, the migrated data moved aside to data.rolled-back, the backup
    extracted in its place, owned by the service user."""
    latest = QuoteString(f"{base}/backups/latest")
    aside = QuoteString(f"{data_dir}.rolled-back")
    restoring = QuoteString(f"{data_dir}.restoring")
    return [
        "if readlink", latest, "| grep -q -e", QuoteString(f"-before-{rid}.tar.gz"), "; then",
        "systemctl stop", QuoteString(f"{service}.service"), ";",
        "rm -rf", restoring, aside, "&& mkdir -p", restoring, "&&",
        "tar -C", restoring, "-xzf", latest, "&&",
        "chown -R", QuoteString(f"{user}:{user}"), restoring, "&& chmod 750", restoring, "&&",
        "mv", QuoteString(data_dir), aside, "&& mv", restoring, QuoteString(data_dir), "&&",
        "echo", QuoteString(f"restored {data_dir} from the backup taken before release {rid}"), ">&2; fi;",
    ]


def _prune(base: str, keep: int, current: str, previous: str | None):
    """Drop old releases beyond `keep` (never the live or the previous one)."""
    keep_names = [Path(current).name] + ([Path(previous).name] if previous else [])
    excludes = " ".join(f"-e {shlex.quote(n)}" for n in keep_names)
    return StringCommand(
        f"cd {shlex.quote(base + '/releases')} && ls -1t | grep -v -x {excludes} "
        f"| tail -n +{int(keep) + 1} | xargs -r rm -rf"
    )


@operation()
def python_release(
    base: str,
    rid: str,
    current_link: str,
    uploads: list | None = None,
    pip_args: list | None = None,
    data_dir: str | None = None,
    keep: int = 2,
    keep_backups: int = 5,
):
    """Make releases/<rid> the live release (`base/current_link` -> it).

    Nothing happens when it already is. Otherwise the release is built (unless a complete
    one exists, e.g. when going back to an earlier version), the data dir is backed up
    consistently, the old release is remembered as `previous`, and the link is switched
    atomically.
    """
    release = f"{base}/releases/{rid}"
    link = f"{base}/{current_link}"
    current = _link_target(link)
    if current == release:
        host.noop(f"{link} is release {rid}")
        return
    host.log(f"Will switch {link} from {current or 'nothing'} to release {rid}")
    if not host.get_fact(File, path=f"{release}/.complete"):
        yield from _build_release(release, uploads or [], pip_args or [])
    if current and data_dir:
        yield _backup_data(base, data_dir, rid, keep_backups)
    if current:
        yield StringCommand("ln", "-sfn", QuoteString(current), QuoteString(f"{base}/previous"))
    yield StringCommand(
        "ln", "-sfn", QuoteString(release), QuoteString(f"{link}.new"), "&&",
        "mv", "-T", QuoteString(f"{link}.new"), QuoteString(link),
    )
    yield _prune(base, keep, release, current)


@operation(is_idempotent=True)
def gate_or_rollback(
    check,
    description: str,
    base: str,
    current_link: str,
    service: str,
    upgraded,
    check_url: str,
    timeout_s: float = 60,
    interval_s: float = 2,
    data_dir: str | None = None,
    user: str | None = None,
):
    """Health gate that rolls back: when `check` fails and this run switched releases,
    put the previous release back (and, with `data_dir`, the data backed up before the
    switch, which the new release may have migrated), clear the start limit, restart,
    wait for `check_url`, then fail with why: the unit's state and last journal lines."""
    if not state.is_executing:
        host.noop(f"{description}: checked when the deploy runs")
        return
    ok, observed = poll(check, timeout_s, interval_s)
    if ok:
        host.noop(f"{description}: {observed}")
        return
    reason = f"{description}: not healthy after {timeout_s:g}s; last observed: {observed}\n{unit_report(service)}"
    link = f"{base}/{current_link}"
    previous, current = _link_target(f"{base}/previous"), _link_target(link)
    if upgraded() and previous and previous != current:
        message = f"{reason}\nRolled back {service} from {current} to {previous}; the run fails."
        restore = restore_data_commands(base, data_dir, Path(current).name, service, user) if data_dir and user else []
        yield StringCommand(
            "ln", "-sfn", QuoteString(previous), QuoteString(f"{link}.new"), "&&",
            "mv", "-T", QuoteString(f"{link}.new"), QuoteString(link), ";", *restore,
            restart_command(f"{service}.service"), ";",
            "for i in $(seq 1 30); do curl -fsS -o /dev/null", QuoteString(check_url), "2>/dev/null && break; sleep 1; done;",
            "echo", QuoteString(message), ">&2; exit 1",
        )
        return
    yield StringCommand("echo", QuoteString(reason), ">&2", "&&", "false")


# MA 2.3's defaults: a value left out of settings.json means this (and MA's UI drops a
# value equal to its default when the user saves that section).
MA_DEFAULTS = {("webserver", "bind_ip"): "0.0.0.0", ("webserver", "bind_port"): 8095,
               ("streams", "bind_ip"): "0.0.0.0", ("streams", "bind_port"): 8097}


def settings_value_ok(current: dict, domain: str, key: str, wanted) -> bool:
    value = core_value(current, domain, key)
    return value == wanted or (value is None and MA_DEFAULTS.get((domain, key)) == wanted)


@operation()
def ma_settings(path: str, wanted: dict, user: str, service: str):
    """MA's own settings.json holds `wanted` ({controller: {key: value}}); every other
    setting is kept. MA rewrites the whole file from memory, so it is stopped before the
    edit (its restart follows, as this operation changed)."""
    current = host.get_fact(MusicAssistantSettings, path=path)
    if current.get("error"):
        raise ConfigError(f"{host.name}: {current['error']}; fix or remove it (Music Assistant falls back to defaults)")
    missing = {
        domain: {k: v for k, v in values.items() if not settings_value_ok(current, domain, k, v)}
        for domain, values in wanted.items()
    }
    missing = {d: v for d, v in missing.items() if v}
    if not missing:
        host.noop(f"{path} already sets {json.dumps(wanted, sort_keys=True)}")
        return
    host.log(f"Will set {json.dumps(missing, sort_keys=True)} in {path} (other settings kept)")
    yield StringCommand("systemctl", "stop", QuoteString(f"{service}.service"), "2>/dev/null", "||", "true")
    yield StringCommand(
        "python3", "-c", QuoteString(_MERGE_SETTINGS), QuoteString(path), QuoteString(json.dumps(wanted)), "&&",
        "chown", QuoteString(f"{user}:{user}"), QuoteString(path), "&&", "chmod", "640", QuoteString(path),
    )


# Runs on the host: merge {controller: {key: value}} into settings.json (or its .backup,
# as MA itself falls back to it), written atomically.
_MERGE_SETTINGS = r"""
import json, os, sys
path, wanted = sys.argv[1], json.loads(sys.argv[2])
data = {}
for name in (path, path + ".backup"):
    if os.path.isfile(name):
        data = json.load(open(name, encoding="utf-8")); break
core = data.setdefault("core", {})
for domain, values in wanted.items():
    entry = core.setdefault(domain, {"domain": domain})
    entry.setdefault("domain", domain)
    entry.setdefault("values", {}).update(values)
with open(path + ".infra-new", "w", encoding="utf-8") as fh:
    json.dump(data, fh, indent=2)
os.replace(path + ".infra-new", path)
"""


# ----------------------------------------------------------------------------- phases


_EXTRA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def requirement_with_extras(spec: str, extras) -> str:
    """`name[extras] @ url` / `name[extras]==1.2`: the extras knob applied to a pip spec."""
    req = Requirement(spec)
    req.extras = set(req.extras) | set(extras)
    return str(req)


def spec_problem(spec: str | None) -> str | None:
    """A spec must install one known version: `==X` or a direct reference (`@ url@tag`)."""
    if not spec:
        return "music_assistant_spec (a pinned pip spec) is required"
    try:
        req = Requirement(spec)
    except InvalidRequirement as exc:
        return f"music_assistant_spec {spec!r} is not a pip requirement: {exc}"
    pinned = req.url or (len(req.specifier) == 1 and next(iter(req.specifier)).operator in ("==", "==="))
    return None if pinned else f"music_assistant_spec {spec!r} is not pinned (use ==VERSION or name @ URL)"


def check_config(data) -> None:
    """Knobs that must be set before anything connects; one message for all."""
    problems = []
    if data.music_state not in ("present", "absent"):
        problems.append(f"music_state {data.music_state!r} is not 'present' or 'absent'")
    if data.music_state == "present":
        src = _local(data.oauth_server_src)
        if not src or not src.is_dir():
            problems.append(f"oauth_server_src {data.oauth_server_src!r} is not a local directory with the OAuth server")
        elif not (src / data.oauth_entry).exists():
            problems.append(f"{src}/{data.oauth_entry} does not exist (oauth_entry)")
        clients = _local(data.oauth_clients_file) or (src / "oauth_clients.json" if src else None)
        if not clients or not clients.exists():
            problems.append("oauth_clients.json not found (oauth_server_src or oauth_clients_file)")
        wheel = _local(data.music_assistant_wheel)
        if wheel and not wheel.is_file():
            problems.append(f"music_assistant_wheel {wheel} does not exist")
        if not wheel and (problem := spec_problem(data.music_assistant_spec)):
            problems.append(problem)
        house = _local(data.music_assistant_wheelhouse)
        if house and not house.is_dir():
            problems.append(f"music_assistant_wheelhouse {house} is not a directory")
        extras = data.music_assistant_extras
        if not isinstance(extras, (list, tuple)) or not all(isinstance(e, str) and _EXTRA.match(e) for e in extras):
            problems.append(f"music_assistant_extras {extras!r} must be a list of extra names (e.g. ['server'])")
        backup = _local(data.music_import_haos_backup)
        if backup and not backup.is_file():
            problems.append(f"music_import_haos_backup {backup} does not exist")
        if not isinstance(data.music_ffmpeg_min_major, int) or isinstance(data.music_ffmpeg_min_major, bool):
            problems.append(f"music_ffmpeg_min_major {data.music_ffmpeg_min_major!r} must be an integer")
        if data.music_stream_allow_from is not None:
            try:
                ipaddress.ip_network(str(data.music_stream_allow_from), strict=False)
            except ValueError:
                problems.append(f"music_stream_allow_from {data.music_stream_allow_from!r} is not a network (CIDR)")
        if not data.music_web_password_secret and not data.music_web_allow_from:
            problems.append("the public Music Assistant vhost needs access control (MA 2.3 has no login): set "
                            "music_web_password_secret and/or music_web_allow_from")
    if problems:
        raise ConfigError("music: " + "; ".join(problems))


def host_preflight(data) -> None:
    """What MA needs from the host itself (prepare time, before any change)."""
    tools = host.get_fact(MusicHostTools)
    problems = [p for p in (python_problem(tools), ffmpeg_problem(tools, data.music_ffmpeg_min_major)) if p]
    if problems:
        raise PreflightFailed(f"music preflight on {host.name}: " + "; ".join(problems))


@operation(is_idempotent=True)
def ffmpeg_check(min_major: int):
    """After the install: ffmpeg runs and is recent enough (the case preflight could not
    know, e.g. an unknown release with empty apt lists)."""
    if not state.is_executing:
        host.noop("ffmpeg version: checked when the deploy runs")
        return
    tools = host.get_fact(MusicHostTools)
    major = tools.get("ffmpeg_installed")
    if major is not None and major >= min_major:
        host.noop(f"ffmpeg {major}.x installed (>= {min_major})")
        return
    message = ffmpeg_problem(tools, min_major) or "ffmpeg is not installed"
    yield StringCommand("echo", QuoteString(f"music: {message}"), ">&2", "&&", "false")


@deploy("Layout: user, directories, packages")
def layout(data):
    apt.packages(name="Plan's apt dependencies", packages=data.music_apt_packages, update=True, cache_time=3600)
    apt.packages(name="ffmpeg (Music Assistant needs it to start)", packages=["ffmpeg"], no_recommends=True,
                 update=True, cache_time=3600)
    ffmpeg_check(name=f"ffmpeg >= {data.music_ffmpeg_min_major}", min_major=data.music_ffmpeg_min_major)
    user = data.music_service_user
    if data.music_create_service_user:
        system_user(user, user, data.music_base_dir)
    for base in (data.music_base_dir, data.oauth_base_dir):
        files.directory(name=f"{base}", path=base, user="root", group="root", mode="755")
        files.directory(name=f"{base}/releases", path=f"{base}/releases", user="root", group="root", mode="755")
    files.link(name="Music Assistant venv link", path=f"{data.music_base_dir}/venv", target="app/venv")
    files.link(name="OAuth server venv link", path=f"{data.oauth_base_dir}/venv", target="current/venv")


def _ma_release(data):
    wheel = _local(data.music_assistant_wheel)
    house = _local(data.music_assistant_wheelhouse)
    deps = sorted(house.glob("*.whl")) if house else []
    extras = sorted(data.music_assistant_extras)
    base = data.music_base_dir
    find_links = ["--find-links", "{release}/wheels"] if deps else []
    dep_uploads = [(p, f"wheels/{p.name}") for p in deps]
    dep_ids = [(p.name, _sha256_file(p)) for p in deps]
    if wheel:
        # The wheel file itself with the extras: naming the project instead makes pip see
        # the upload and a --find-links copy as two candidates (ResolutionImpossible).
        suffix = f"[{','.join(extras)}]" if extras else ""
        rid = release_id("wheel", _sha256_file(wheel), dep_ids, data.music_assistant_pip_args, extras)
        uploads = [(wheel, f"dist/{wheel.name}"), *dep_uploads]
        pip_args = [*data.music_assistant_pip_args, *find_links, f"{{release}}/dist/{wheel.name}{suffix}"]
    else:
        spec = requirement_with_extras(data.music_assistant_spec, extras)
        rid = release_id("spec", spec, dep_ids, data.music_assistant_pip_args)
        uploads = dep_uploads
        pip_args = [*data.music_assistant_pip_args, *find_links, spec]
    return python_release(
        name=f"Music Assistant release {rid}", base=base, rid=rid, current_link="app",
        uploads=uploads, pip_args=pip_args, data_dir=f"{base}/data", keep=data.music_keep_releases,
        keep_backups=data.music_keep_backups,
    )


def _ma_settings_import(data):
    backup = _local(data.music_import_haos_backup)
    if not backup:
        return None
    content = haos_settings_json(backup)
    if content is None:
        raise ConfigError(f"music: no Music Assistant settings.json found in {backup}")
    return put_if_absent(
        name="Import settings.json from the HAOS backup (once)", dest=f"{data.music_base_dir}/data/settings.json",
        content=HiddenValue(content), user=data.music_service_user, group=data.music_service_user, mode="640",
    )


def ma_listen_settings(data) -> dict:
    """Where MA's webserver and stream server listen, in its own settings' terms.

    Both default to 0.0.0.0 (every IPv4 and IPv6 address) in MA 2.3. The webserver is
    reached through nginx only; the stream server binds every address only when
    `music_stream_allow_from` opens it (players on that network fetch audio from it).
    """
    stream_ip = "0.0.0.0" if data.music_stream_allow_from else "127.0.0.1"
    return {
        "webserver": {"bind_ip": "127.0.0.1", "bind_port": data.music_assistant_port},
        "streams": {"bind_ip": stream_ip, "bind_port": data.music_stream_port},
    }


@deploy("Music Assistant")
def music_assistant(data):
    base = data.music_base_dir
    release = _ma_release(data)
    files.directory(
        name=f"{base}/data", path=f"{base}/data", user=data.music_service_user,
        group=data.music_service_user, mode="750",
    )
    imported = _ma_settings_import(data)
    settings = ma_settings(
        name="Music Assistant settings.json: listen on loopback (other settings kept)",
        path=f"{base}/data/settings.json", wanted=ma_listen_settings(data),
        user=data.music_service_user, service=MA_SERVICE,
    )
    spec = ServiceSpec.from_data(
        {
            "name": MA_SERVICE,
            "description": "Music Assistant Media Server",
            "exec_start": data.music_assistant_exec_start.format(base=base),
            "user": data.music_service_user,
            "working_dir": base,
            "state_dirs": [f"{base}/data"],
            "restart": "always",
            "restart_sec": data.music_assistant_restart_sec,
            "create_user": False,
            "env": {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", **data.music_assistant_env},
            **data.music_assistant_sandbox,
        },
        defaults=service_defaults(),
    )
    hardened_service(spec, restart_when=tuple(op for op in (release, imported, settings) if op), restart_failure="gate",
                     restart_paths=(f"{base}/app",))
    return release


@deploy("OAuth server")
def oauth_server(data):
    base = data.oauth_base_dir
    src = _local(data.oauth_server_src)
    clients = _local(data.oauth_clients_file) or src / "oauth_clients.json"
    uploads = [(p, rel) for p, rel in code_files(src) if rel != "oauth_clients.json"] + [(clients, "oauth_clients.json")]
    pip_args = [*data.oauth_pip_args, "-r", "{release}/requirements.txt"] if has_requirements(src / "requirements.txt") else []
    rid = release_id([(rel, _sha256_file(p)) for p, rel in uploads], pip_args)
    release = python_release(
        name=f"OAuth server release {rid}", base=base, rid=rid, current_link="current",
        uploads=uploads, pip_args=pip_args, keep=data.music_keep_releases,
    )
    spec = ServiceSpec.from_data(
        {
            "name": OAUTH_SERVICE,
            "description": "OAuth Server for Music Assistant + Alexa",
            "exec_start": f"{base}/venv/bin/python {base}/current/{data.oauth_entry}",
            "user": data.music_service_user,
            "working_dir": f"{base}/current",
            "restart": "always",
            "restart_sec": 10,
            "create_user": False,
            "env": {
                "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
                "OAUTH_BIND": "127.0.0.1", "OAUTH_PORT": str(data.oauth_port),
            },
        },
        secrets=secrets.get(data.oauth_secrets),
        defaults=service_defaults(),
    )
    hardened_service(spec, restart_when=(release,), restart_failure="gate", restart_paths=(f"{base}/current",))
    return release


def web_access(data) -> dict:
    """Access control of the public MA vhost: MA 2.3 has no login of its own, and its
    API controls players and reads the library (vhost `access` in deploys/parts/nginx.py)."""
    access: dict = {"allow": list(data.music_web_allow_from or [])}
    if data.music_web_password_secret:
        access["auth_file"] = auth_file_path(data.music_nginx_site)
        access["realm"] = "Music Assistant"
    if data.music_web_password_secret and access["allow"]:
        access["satisfy"] = data.music_web_satisfy
    return access


def vhosts(data) -> list[dict]:
    return [
        {
            "server_name": data.music_public_name,
            "upstream": f"127.0.0.1:{data.music_assistant_port}",
            "websocket": True,
            "locations": [{"path": p, "deny": True} for p in data.music_denied_paths],
            "access": web_access(data),
        },
        {"server_name": data.oauth_public_name, "upstream": f"127.0.0.1:{data.oauth_port}"},
    ]


def web_credentials(data) -> tuple[str, str] | None:
    if not data.music_web_password_secret:
        return None
    secret = secrets.get([data.music_web_password_secret])[data.music_web_password_secret]
    return data.music_web_user, secret.unmask()


@deploy("Health gates")
def health_gates(data, ma_release, oauth_release):
    from deploys.operations import wait_until

    timeout, interval = data.health_timeout_s, data.health_interval_s
    ma_url = f"http://127.0.0.1:{data.music_assistant_port}/info"
    oauth_url = f"http://127.0.0.1:{data.oauth_port}{data.oauth_health_path}"
    gate_or_rollback(
        name=f"Music Assistant answers {ma_url} with its server_version (else roll back)",
        check=http_check(ma_url, "server_version"),
        description=ma_url, base=data.music_base_dir, current_link="app", service=MA_SERVICE,
        upgraded=ma_release.did_change, check_url=ma_url, timeout_s=timeout, interval_s=interval,
        data_dir=f"{data.music_base_dir}/data", user=data.music_service_user,
    )
    gate_or_rollback(
        name=f"OAuth server healthy on {oauth_url} (else roll back)",
        check=http_check(oauth_url, data.oauth_health_field, data.oauth_health_expect),
        description=oauth_url, base=data.oauth_base_dir, current_link="current", service=OAUTH_SERVICE,
        upgraded=oauth_release.did_change, check_url=oauth_url, timeout_s=timeout, interval_s=interval,
    )
    if not data.music_external_check:
        return
    address = data.music_external_address
    checks = ((data.music_public_name, "/info", web_credentials(data)), (data.oauth_public_name, data.oauth_health_path, None))
    for name, path, auth in checks:
        wait_until(
            name=f"https://{name}{path} healthy through nginx (from here)",
            check=external_https_check(path, name, address, data.music_external_ca_file, auth=auth),
            description=f"https://{name}{path}", timeout_s=timeout, interval_s=interval,
        )


def firewall_rules(data) -> list:
    """22/80/443 from anywhere; MA's stream port only from the network that opens it."""
    rules: list = list(data.music_firewall_allow)
    if data.music_stream_allow_from:
        rules.append({"port": f"{data.music_stream_port}/tcp", "from": str(data.music_stream_allow_from)})
    return rules


def _health_units(data) -> dict[str, io.StringIO]:
    context = {
        "base": data.music_base_dir, "ma_port": data.music_assistant_port, "oauth_port": data.oauth_port,
        "oauth_health_path": data.oauth_health_path, "services": [MA_SERVICE, OAUTH_SERVICE],
        "memory_budget_mb": data.music_memory_budget_mb, "every": data.music_health_check_every,
        "script": f"{data.music_base_dir}/bin/{HEALTH_UNIT}",
    }
    return {
        f"{data.music_base_dir}/bin/{HEALTH_UNIT}": render_io(f"opt/music-assistant/bin/{HEALTH_UNIT}.j2", **context),
        f"/etc/systemd/system/{HEALTH_UNIT}.service": render_io(f"etc/systemd/system/{HEALTH_UNIT}.service.j2", **context),
        f"/etc/systemd/system/{HEALTH_UNIT}.timer": render_io(f"etc/systemd/system/{HEALTH_UNIT}.timer.j2", **context),
    }


def monitoring(data):
    """The plan's daily health check as a script on a systemd timer (journal output)."""
    health_check_timer(HEALTH_UNIT, _health_units(data), script_mode="755")


@deploy("Complete rollback (music_state = absent)")
def remove(data):
    """Stop, disable and remove units, vhost and code; keep data unless told otherwise."""
    units = [f"{HEALTH_UNIT}.timer", f"{HEALTH_UNIT}.service", f"{MA_SERVICE}.service", f"{OAUTH_SERVICE}.service"]
    for unit in units:
        systemd.service(name=f"{unit} stopped and disabled", service=unit, running=False, enabled=False)
    removed = [files.file(name=f"Remove {u}", path=f"/etc/systemd/system/{u}", present=False) for u in units]
    for service in (MA_SERVICE, OAUTH_SERVICE):
        files.directory(name=f"Remove /etc/{service} (env file)", path=f"/etc/{service}", present=False)
    systemd.daemon_reload(name="Reload systemd (units removed)", _if=lambda: any(op.did_change() for op in removed))
    remove_nginx_site(data.music_nginx_site)
    base = data.music_base_dir
    if data.music_remove_data:
        files.directory(name=f"Remove {base} (with data)", path=base, present=False)
    else:
        for link in ("app", "venv", "previous"):
            files.link(name=f"Remove {base}/{link}", path=f"{base}/{link}", present=False)
        for sub in ("releases", "bin"):
            files.directory(name=f"Remove {base}/{sub}", path=f"{base}/{sub}", present=False)
    files.directory(name=f"Remove {data.oauth_base_dir}", path=data.oauth_base_dir, present=False)


def main(data):
    check_config(data)
    if data.music_state == "absent":
        remove(data)
        return
    names = [data.music_public_name, data.oauth_public_name]
    preflight(
        names=names,
        ports={
            data.music_assistant_port: f"{MA_SERVICE}.service",
            data.oauth_port: f"{OAUTH_SERVICE}.service",
            data.music_stream_port: f"{MA_SERVICE}.service",
            80: "nginx.service",
            443: "nginx.service",
        },
        secrets=data.required_secrets,
        disk_paths=("/", "/opt"),
    )
    host_preflight(data)
    layout(data)
    if data.music_firewall:
        firewall(firewall_rules(data))
    ma_release = music_assistant(data)
    oauth_release = oauth_server(data)
    if data.music_web_password_secret:
        user, password = web_credentials(data)
        basic_auth_file(data.music_nginx_site, {user: password})
    https_site(data.music_nginx_site, vhosts(data), names, data)
    health_gates(data, ma_release, oauth_release)
    monitoring(data)


# (`ctx_host.isset()`: unit tests import this module's helpers outside a pyinfra run.)
if ctx_host.isset() and "music" in host.groups:
    deploy_lock.guarded("music", main, host.data)  # one run at a time on this host, and its record
