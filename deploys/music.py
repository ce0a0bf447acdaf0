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
import json
import shlex
import tarfile
import time
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, deploy, operation
from pyinfra.context import ctx_host, state
from pyinfra.facts.files import File, Link
from pyinfra.operations import apt, files, server, systemd

from deploys import secrets
from deploys.errors import ConfigError
from deploys.operations import poll
from deploys.parts.health import external_https_check, health_check_timer, http_check
from deploys.parts.nginx import remove_nginx_site
from deploys.parts.preflight import preflight
from deploys.parts.service import ServiceSpec, hardened_service, service_defaults
from deploys.parts.tls import https_site
from deploys.templating import render_io

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


def haos_config_json(backup: Path) -> bytes | None:
    """config.json of the Music Assistant add-on inside a HAOS backup (.tar), or None.

    A HAOS backup is a tar of per-add-on tarballs (`<slug>.tar.gz`); the add-on's data
    sits under `data/`. The first config.json in an archive whose name mentions music
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
            elif Path(member.name).name == "config.json" and (inside_wanted or wanted(member.name)):
                return archive.extractfile(member).read()
        return None

    with tarfile.open(backup) as outer:
        return search(outer, False)


# ----------------------------------------------------------------------------- operations


@operation()
def put_if_absent(dest: str, content: bytes, user: str = "root", group: str = "root", mode: str = "640"):
    """Upload `content` to `dest` only when `dest` does not exist (one-time imports)."""
    if host.get_fact(File, path=dest):
        host.noop(f"{dest} exists: not overwritten")
        return
    yield FileUploadCommand(io.BytesIO(content), dest)
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


def _backup_data(base: str, data_dir: str, rid: str):
    stamp = time.strftime("%Y%m%dT%H%M%S")
    archive = f"{base}/backups/data-{stamp}-before-{rid}.tar.gz"
    return StringCommand(
        "if [ -d", QuoteString(data_dir), "]; then mkdir -p", QuoteString(f"{base}/backups"), "&&",
        "chmod 700", QuoteString(f"{base}/backups"), "&&",
        "tar -C", QuoteString(data_dir), "-czf", QuoteString(archive), ".; fi",
    )


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
):
    """Make releases/<rid> the live release (`base/current_link` -> it).

    Nothing happens when it already is. Otherwise the release is built (unless a complete
    one exists, e.g. when going back to an earlier version), the data dir is backed up,
    the old release is remembered as `previous`, and the link is switched atomically.
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
        yield _backup_data(base, data_dir, rid)
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
):
    """Health gate that rolls back: when `check` fails and this run switched releases,
    put the previous release back, restart, wait for `check_url`, then fail with why."""
    if not state.is_executing:
        host.noop(f"{description}: checked when the deploy runs")
        return
    ok, observed = poll(check, timeout_s, interval_s)
    if ok:
        host.noop(f"{description}: {observed}")
        return
    reason = f"{description}: not healthy after {timeout_s:g}s; last observed: {observed}"
    link = f"{base}/{current_link}"
    previous, current = _link_target(f"{base}/previous"), _link_target(link)
    if upgraded() and previous and previous != current:
        message = f"{reason}. Rolled back {service} from {current} to {previous}; the run fails."
        yield StringCommand(
            "ln", "-sfn", QuoteString(previous), QuoteString(f"{link}.new"), "&&",
            "mv", "-T", QuoteString(f"{link}.new"), QuoteString(link), "&&",
            "systemctl", "restart", QuoteString(f"{service}.service"), ";",
            "for i in $(seq 1 30); do curl -fsS -o /dev/null", QuoteString(check_url), "&& break; sleep 1; done;",
            "echo", QuoteString(message), ">&2; exit 1",
        )
        return
    yield StringCommand("echo", QuoteString(reason), ">&2", "&&", "false")


# ----------------------------------------------------------------------------- phases


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
        if not wheel and not data.music_assistant_spec:
            problems.append("music_assistant_spec (a pinned pip spec) is required")
        backup = _local(data.music_import_haos_backup)
        if backup and not backup.is_file():
            problems.append(f"music_import_haos_backup {backup} does not exist")
    if problems:
        raise ConfigError("music: " + "; ".join(problems))


@deploy("Layout: user, directories, packages")
def layout(data):
    apt.packages(name="Plan's apt dependencies", packages=data.music_apt_packages, update=True, cache_time=3600)
    user = data.music_service_user
    if data.music_create_service_user:
        server.group(name=f"Group {user}", group=user, system=True)
        server.user(
            name=f"User {user}", user=user, group=user, system=True, shell="/usr/sbin/nologin",
            home=data.music_base_dir, create_home=False, ensure_home=False,
        )
    for base in (data.music_base_dir, data.oauth_base_dir):
        files.directory(name=f"{base}", path=base, user="root", group="root", mode="755")
        files.directory(name=f"{base}/releases", path=f"{base}/releases", user="root", group="root", mode="755")
    files.link(name="Music Assistant venv link", path=f"{data.music_base_dir}/venv", target="app/venv")
    files.link(name="OAuth server venv link", path=f"{data.oauth_base_dir}/venv", target="current/venv")


def _ma_release(data):
    wheel = _local(data.music_assistant_wheel)
    base = data.music_base_dir
    if wheel:
        rid = release_id("wheel", _sha256_file(wheel), data.music_assistant_pip_args)
        uploads = [(wheel, f"dist/{wheel.name}")]
        pip_args = [*data.music_assistant_pip_args, f"{{release}}/dist/{wheel.name}"]
    else:
        rid = release_id("spec", data.music_assistant_spec, data.music_assistant_pip_args)
        uploads = []
        pip_args = [*data.music_assistant_pip_args, data.music_assistant_spec]
    return python_release(
        name=f"Music Assistant release {rid}", base=base, rid=rid, current_link="app",
        uploads=uploads, pip_args=pip_args, data_dir=f"{base}/data", keep=data.music_keep_releases,
    )


def _ma_config_import(data):
    backup = _local(data.music_import_haos_backup)
    if not backup:
        return None
    content = haos_config_json(backup)
    if content is None:
        raise ConfigError(f"music: no Music Assistant config.json found in {backup}")
    return put_if_absent(
        name="Import config.json from the HAOS backup (once)", dest=f"{data.music_base_dir}/data/config.json",
        content=content, user=data.music_service_user, group=data.music_service_user, mode="640",
    )


@deploy("Music Assistant")
def music_assistant(data):
    base = data.music_base_dir
    release = _ma_release(data)
    files.directory(
        name=f"{base}/data", path=f"{base}/data", user=data.music_service_user,
        group=data.music_service_user, mode="750",
    )
    imported = _ma_config_import(data)
    spec = ServiceSpec.from_data(
        {
            "name": MA_SERVICE,
            "description": "Music Assistant Media Server",
            "exec_start": data.music_assistant_exec_start.format(base=base),
            "user": data.music_service_user,
            "working_dir": base,
            "state_dirs": [f"{base}/data"],
            "restart": "always",
            "restart_sec": 10,
            "create_user": False,
            "env": {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", **data.music_assistant_env},
        },
        defaults=service_defaults(),
    )
    hardened_service(spec, restart_when=tuple(op for op in (release, imported) if op))
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
        secrets=secrets.get(data.required_secrets),
        defaults=service_defaults(),
    )
    hardened_service(spec, restart_when=(release,))
    return release


def vhosts(data) -> list[dict]:
    return [
        {
            "server_name": data.music_public_name,
            "upstream": f"127.0.0.1:{data.music_assistant_port}",
            "websocket": True,
            "locations": [{"path": p, "deny": True} for p in data.music_denied_paths],
        },
        {"server_name": data.oauth_public_name, "upstream": f"127.0.0.1:{data.oauth_port}"},
    ]


@deploy("Health gates")
def health_gates(data, ma_release, oauth_release):
    from deploys.operations import wait_until

    timeout, interval = data.health_timeout_s, data.health_interval_s
    ma_url = f"http://127.0.0.1:{data.music_assistant_port}/"
    oauth_url = f"http://127.0.0.1:{data.oauth_port}{data.oauth_health_path}"
    gate_or_rollback(
        name=f"Music Assistant healthy on {ma_url} (else roll back)", check=http_check(ma_url),
        description=ma_url, base=data.music_base_dir, current_link="app", service=MA_SERVICE,
        upgraded=ma_release.did_change, check_url=ma_url, timeout_s=timeout, interval_s=interval,
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
    for name, path in ((data.music_public_name, "/"), (data.oauth_public_name, data.oauth_health_path)):
        wait_until(
            name=f"https://{name}{path} healthy through nginx (from here)",
            check=external_https_check(path, name, address, data.music_external_ca_file),
            description=f"https://{name}{path}", timeout_s=timeout, interval_s=interval,
        )


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
            80: "nginx.service",
            443: "nginx.service",
        },
        secrets=data.required_secrets,
        disk_paths=("/", "/opt"),
    )
    layout(data)
    ma_release = music_assistant(data)
    oauth_release = oauth_server(data)
    https_site(data.music_nginx_site, vhosts(data), names, data)
    health_gates(data, ma_release, oauth_release)
    monitoring(data)


# (`ctx_host.isset()`: unit tests import this module's helpers outside a pyinfra run.)
if ctx_host.isset() and "music" in host.groups:
    main(host.data)
