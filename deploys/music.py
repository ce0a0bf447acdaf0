"""Music Assistant + OAuth server (Alexa) on a native VM: the plan as an idempotent deploy.

    pyinfra inventory.py deploys/music.py                  # disposable test hosts
    DEPLOY_ENV=prod pyinfra inventory.py deploys/music.py  # dev.jasonhollis.com

Phases (as in the plan): 1 preflight (OS, disk, memory, ports, secrets, DNS for both
names) -> 2 layout (user, directories, apt) -> 3 Music Assistant (own venv, pinned pip
spec, hardened unit) -> 4 OAuth server (user's code, venv, secrets in a 0600
EnvironmentFile) -> 5 nginx + certbot (HTTP->HTTPS, one TLS vhost per name, WebSocket)
-> health gates (local, then HTTPS from outside) -> health-check timer.

Upgrades (deploys/parts/releases.py): each app is a release series, Music Assistant in
`<music_base_dir>/releases/app/<id>` (live link `app`), the OAuth server in
`<oauth_base_dir>/releases/current/<id>` (live link `current`), id = hash of what is
installed. A new release is built beside the live one; the switch backs up MA's data
dir (SQLite through its backup API, settings.json), stops, links, starts and health-gates;
a failure puts back the previous release and its data and fails the run with the unit's
state and journal. `make releases DEPLOY=music` lists both series; `make rollback
DEPLOY=music [TO=id]` goes back to MA's previous release (or the kept release of either
app named by TO) with the data backed up while it was live. `music_state = "absent"` is
the plan's "complete rollback" (data kept by default).
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import re
import shlex
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.context import ctx_host, state
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, systemd

from packaging.requirements import InvalidRequirement, Requirement

from deploys import secrets
from deploys.errors import ConfigError, PreflightFailed
from deploys.operations import fail_with, wait_until
from deploys.parts import deploy_lock, releases
from deploys.parts.data_backup import data_dir_host_steps, data_dir_steps
from deploys.parts.firewall import firewall
from deploys.parts.host_steps import settled
from deploys.parts.health import external_https_check, health_check_timer, http_check, service_gate, unit_gate
from deploys.parts.nginx import auth_file_path, basic_auth_file, remove_nginx_site
from deploys.parts.preflight import preflight
from deploys.parts.python_env import release_build_steps
from deploys.parts.service import (
    ServiceSpec,
    hardened_service,
    recorded_restart_command,
    release_hooks,
    restart_inputs,
    service_defaults,
    service_running,
    system_user,
)
from deploys.parts.tls import https_site
from deploys.templating import render_io
from facts.music import MusicAssistantSettings, MusicHostTools, core_value, ffmpeg_problem, python_problem

REPO = Path(__file__).resolve().parent.parent
MA_SERVICE = "music-assistant"
OAUTH_SERVICE = "oauth-server"
HEALTH_UNIT = "music-health-check"
MA_COMPONENT = "app"  # <music_base_dir>/app -> releases/app/<id> (deploys/parts/releases.py)
OAUTH_COMPONENT = "current"  # <oauth_base_dir>/current -> releases/current/<id>
SWITCH_UNIT = "music-release"  # the host-side switch (music_switch_on_host)
LAYOUT = "releases-part"  # in every release id: ids of the layout before it never match
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
    if data.get("release_action") not in (None, "", "rollback", "releases"):
        problems.append(f"release_action {data.get('release_action')!r} is not 'rollback' or 'releases'")
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
    yield fail_with(f"music: {message}")


@deploy("Layout: user, directories, packages")
def layout(data):
    apt.packages(name="Plan's apt dependencies", packages=data.music_apt_packages, update=True, cache_time=3600)
    apt.packages(name="ffmpeg (Music Assistant needs it to start)", packages=["ffmpeg"], no_recommends=True,
                 update=True, cache_time=3600)
    ffmpeg_check(name=f"ffmpeg >= {data.music_ffmpeg_min_major}", min_major=data.music_ffmpeg_min_major)
    user = data.music_service_user
    if data.music_create_service_user:
        system_user(user, user, data.music_base_dir)
    if data.music_switch_on_host:
        releases.switch_script()
    for base in (data.music_base_dir, data.oauth_base_dir):
        files.directory(name=f"{base}", path=base, user="root", group="root", mode="755")
        files.directory(name=f"{base}/releases", path=f"{base}/releases", user="root", group="root", mode="755")
    files.link(name="Music Assistant venv link", path=f"{data.music_base_dir}/venv", target="app/venv")
    files.link(name="OAuth server venv link", path=f"{data.oauth_base_dir}/venv", target="current/venv")


def _ma_release(data) -> tuple[str, list]:
    """(release id, build steps) of Music Assistant: a venv with the wheel or the pinned
    spec (and its extras), from the wheelhouse when one is given."""
    wheel = _local(data.music_assistant_wheel)
    house = _local(data.music_assistant_wheelhouse)
    deps = sorted(house.glob("*.whl")) if house else []
    extras = sorted(data.music_assistant_extras)
    find_links = ["--find-links", "{release}/wheels"] if deps else []
    dep_uploads = [(p, f"wheels/{p.name}") for p in deps]
    dep_ids = [(p.name, _sha256_file(p)) for p in deps]
    if wheel:
        # The wheel file itself with the extras: naming the project instead makes pip see
        # the upload and a --find-links copy as two candidates (ResolutionImpossible).
        suffix = f"[{','.join(extras)}]" if extras else ""
        rid = releases.release_id(LAYOUT, "wheel", _sha256_file(wheel), dep_ids, data.music_assistant_pip_args, extras)
        uploads = [(wheel, f"dist/{wheel.name}"), *dep_uploads]
        pip_args = [*data.music_assistant_pip_args, *find_links, f"{{release}}/dist/{wheel.name}{suffix}"]
    else:
        spec = requirement_with_extras(data.music_assistant_spec, extras)
        rid = releases.release_id(LAYOUT, "spec", spec, dep_ids, data.music_assistant_pip_args)
        uploads = dep_uploads
        pip_args = [*data.music_assistant_pip_args, *find_links, spec]
    path = releases.release_path(data.music_base_dir, MA_COMPONENT, rid)
    return rid, release_build_steps(path, uploads, pip_args)


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


def ma_spec(data) -> ServiceSpec:
    base = data.music_base_dir
    return ServiceSpec.from_data(
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


def oauth_spec(data) -> ServiceSpec:
    base = data.oauth_base_dir
    return ServiceSpec.from_data(
        {
            "name": OAUTH_SERVICE,
            "description": "OAuth Server for Music Assistant + Alexa",
            "exec_start": f"{base}/venv/bin/python {base}/{OAUTH_COMPONENT}/{data.oauth_entry}",
            "user": data.music_service_user,
            "working_dir": f"{base}/{OAUTH_COMPONENT}",
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


@dataclass(frozen=True)
class App:
    """One of the deploy's two release series (Music Assistant, the OAuth server)."""

    title: str
    root: str
    component: str
    spec: ServiceSpec
    url: str
    check: Callable
    data_dir: str | None = None
    health_field: str | None = None
    health_expect: str | None = None

    @property
    def link(self) -> str:
        return f"{self.root}/{self.component}"

    def live(self) -> str | None:
        return releases.current_components(releases.read(self.root, [self.component]), [self.component])[self.component]

    def component_for(self, rid: str, data) -> releases.Component:
        stop, start = release_hooks(self.spec, restart_paths=(self.link,))
        gate = unit_gate(self.check, self.url, self.spec.name, float(data.health_timeout_s), float(data.health_interval_s))
        return releases.Component(self.component, rid, stop=stop, start=start, gate=gate)

    def data_steps(self, data, restore_for: str | None = None):
        if not self.data_dir:
            return None
        return data_dir_steps(self.data_dir, f"{self.root}/backups", int(data.music_keep_backups),
                              data.music_service_user, restore_for=restore_for)

    def host_component_for(self, rid: str) -> releases.Component:
        """The same steps as command lines, for the host-side switch (release-switch): the
        start clears the start limit and records its inputs, as `release_hooks`' does."""
        unit = f"{self.spec.name}.service"
        gate = " ".join(shlex.quote(a) for a in ("python3", releases.SWITCH_SCRIPT, "http-check", self.url,
                                                  *([self.health_field] if self.health_field else []),
                                                  *([str(self.health_expect)] if self.health_expect is not None else [])))
        report = (f"echo \"Unit {unit}: $(systemctl show -p ActiveState -p SubState -p Result -p ExecMainStatus "
                  f"-p NRestarts {unit} | tr '\\n' ' ')\"; echo 'last journal lines:'; "
                  f"journalctl -u {unit} -n 12 --no-pager -o cat")
        return releases.Component(self.component, rid, stop=f"systemctl stop {unit}",
                                  start=recorded_restart_command(unit, restart_inputs(self.spec, (self.link,))),
                                  gate=gate, report=report)

    def host_data_steps(self, data, restore_for: str | None = None):
        if not self.data_dir:
            return None
        return data_dir_host_steps(self.data_dir, f"{self.root}/backups", int(data.music_keep_backups),
                                   data.music_service_user, restore_for=restore_for)

    def switched(self, data, rid: str, action: str, meta: dict, name: str, restore_for: str | None = None,
                 cleanup: bool = False) -> None:
        """Make `rid` live: on the host (music_switch_on_host, unit SWITCH_UNIT) or from here."""
        keep = int(data.music_keep_releases) + 2
        if data.music_switch_on_host:
            on_host = releases.HostSwitch(SWITCH_UNIT, gate_timeout_s=float(data.health_timeout_s),
                                          gate_interval_s=float(data.health_interval_s))
            releases.releases_switched_on_host(
                name=name, root=self.root, names=[self.component], components=[self.host_component_for(rid)],
                on_host=on_host, data=self.host_data_steps(data, restore_for), switch=releases.Switch(action, meta),
                keep=keep, cleanup=legacy_cleanup_command(self) if cleanup else "",
            )
            return
        releases.releases_switched(
            name=name, root=self.root, names=[self.component], components=[self.component_for(rid, data)],
            data=self.data_steps(data, restore_for), switch=releases.Switch(action, meta), keep=keep,
            cleanup=legacy_cleanup(self) if cleanup else None,
        )


def apps(data) -> list[App]:
    ma_url = f"http://127.0.0.1:{data.music_assistant_port}/info"
    oauth_url = f"http://127.0.0.1:{data.oauth_port}{data.oauth_health_path}"
    return [
        App("Music Assistant", data.music_base_dir, MA_COMPONENT, ma_spec(data), ma_url,
            http_check(ma_url, "server_version"), data_dir=f"{data.music_base_dir}/data", health_field="server_version"),
        App("OAuth server", data.oauth_base_dir, OAUTH_COMPONENT, oauth_spec(data), oauth_url,
            http_check(oauth_url, data.oauth_health_field, data.oauth_health_expect),
            health_field=data.oauth_health_field, health_expect=data.oauth_health_expect),
    ]


def switch_meta(data, **extra) -> dict:
    commit, dirty = deploy_lock.git_revision()
    return {"commit": commit, "dirty": dirty, "by": f"{deploy_lock.operator()}@{host.name}", **extra}


def legacy_cleanup(app: App):
    """After a switch: release dirs of the layout before deploys/parts/releases.py
    (`releases/<id>` beside `releases/<component>/`) and its `previous` link go."""

    def cleanup(host_):
        return releases.run_command(host_, legacy_cleanup_command(app))

    return cleanup


def legacy_cleanup_command(app: App) -> str:
    base = shlex.quote(f"{app.root}/releases")
    return (f"find {base} -mindepth 1 -maxdepth 1 -type d ! -name {shlex.quote(app.component)} "
            f"-exec rm -rf {{}} + -exec echo removed an old-layout release {{}} \\; ; rm -f {shlex.quote(app.root + '/previous')}")


def released(app: App, rid: str, build: list, data, restart_when: tuple = (), meta: dict | None = None) -> None:
    """Build `rid` beside the live release, install the unit, switch (stop, link, start,
    gate; on failure the previous release and its data come back), keep it running."""
    releases.release_built(name=f"{app.title} release {rid} built", root=app.root, component=app.component,
                           rid=rid, build=build, meta=meta, mode="755")
    # (a host-side switch cut off itself is finished or rolled back by this run's switch)
    switching = app.live() != rid or (data.music_switch_on_host and releases.switch_cut_off(app.root))
    hardened_service(app.spec, restart_when=restart_when, restart_failure="gate", restart_paths=(app.link,),
                     started_by_switch=switching)
    app.switched(data, rid, "deploy", meta or {}, cleanup=True,
                 name=f"{app.title} release {rid} live (health-gated, rolled back with its data on failure)")
    service_running(name=f"{app.spec.name} enabled and running", unit=f"{app.spec.name}.service", restart_failure="gate")


@deploy("Music Assistant")
def music_assistant(data):
    base = data.music_base_dir
    ma = apps(data)[0]
    rid, build = _ma_release(data)
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
    version = Path(data.music_assistant_wheel).name if data.music_assistant_wheel else data.music_assistant_spec
    released(ma, rid, build, data, restart_when=tuple(op for op in (imported, settings) if op),
             meta=switch_meta(data, version=version))


def _oauth_release(data) -> tuple[str, list]:
    src = _local(data.oauth_server_src)
    clients = _local(data.oauth_clients_file) or src / "oauth_clients.json"
    uploads = [(p, rel) for p, rel in code_files(src) if rel != "oauth_clients.json"] + [(clients, "oauth_clients.json")]
    pip_args = [*data.oauth_pip_args, "-r", "{release}/requirements.txt"] if has_requirements(src / "requirements.txt") else []
    rid = releases.release_id(LAYOUT, [(rel, _sha256_file(p)) for p, rel in uploads], pip_args)
    return rid, release_build_steps(releases.release_path(data.oauth_base_dir, OAUTH_COMPONENT, rid), uploads, pip_args)


@deploy("OAuth server")
def oauth_server(data):
    rid, build = _oauth_release(data)
    released(apps(data)[1], rid, build, data, meta=switch_meta(data))


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
def health_gates(data):
    """Local gates (a restart without a switch, e.g. a settings change, is checked here;
    after a switch they pass at once), then HTTPS through nginx from here."""
    timeout, interval = data.health_timeout_s, data.health_interval_s
    for app in apps(data):
        service_gate(name=f"{app.title} healthy on {app.url}", check=app.check, description=app.url,
                     unit=app.spec.name, timeout_s=timeout, interval_s=interval)
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


def release_series(data) -> list[releases.Series]:
    """Music Assistant first (`make rollback` without TO goes back there), then OAuth."""
    return [releases.Series(app.title, app.root, (app.component,)) for app in apps(data)]


def rollback(data, series: releases.Series, target: dict) -> None:
    """`make rollback [TO=id]`: Music Assistant's previous release, or the kept release
    of either app whose id starts with TO (`make releases` lists both)."""
    app = next(a for a in apps(data) if a.root == series.root)
    rid = target["components"][app.component]
    if data.music_switch_on_host:
        releases.switch_script()
    host.log(f"rolling {app.title} back to release {target['id']} ({rid}, deployed {target.get('at')}, "
             f"commit {(target.get('commit') or '?')[:12]})")
    app.switched(data, rid, "rollback", switch_meta(data, commit=target.get("commit"), dirty=target.get("dirty")),
                 name=f"{app.title} rolled back to release {target['id']}", restore_for=target["id"])
    service_running(name=f"{app.spec.name} enabled and running", unit=f"{app.spec.name}.service")


def main(data):
    check_config(data)
    if data.music_switch_on_host:  # a switch an earlier apply left running: plan from what it leaves
        settled(SWITCH_UNIT)
    try:
        handled = releases.release_action(data.get("release_action"), release_series(data), data.get("release_to"),
                                          lambda series, target: rollback(data, series, target))
    except ConfigError as exc:
        raise ConfigError(f"music {exc}") from None
    if handled:
        return
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
    music_assistant(data)
    oauth_server(data)
    if data.music_web_password_secret:
        user, password = web_credentials(data)
        basic_auth_file(data.music_nginx_site, {user: password})
    https_site(data.music_nginx_site, vhosts(data), names, data)
    health_gates(data)
    monitoring(data)


# (`ctx_host.isset()`: unit tests import this module's helpers outside a pyinfra run.)
if ctx_host.isset() and "music" in host.groups:
    deploy_lock.guarded("music", main, host.data)  # one run at a time on this host, and its record
