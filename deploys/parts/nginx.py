"""nginx as a TLS reverse proxy in front of services bound to 127.0.0.1.

Reusable by every system (music, archon, hivesync): install nginx, render one site from
data (a list of vhosts), and apply it with `nginx_config`, a validated reload: the new
files are written, `nginx -t` runs, nginx reloads only when something changed, and a
config that fails the test is never left active (the previous files come back and the
operation fails with nginx's own error).

TLS bootstrap: a vhost gets its HTTPS server block (and the HTTP -> HTTPS redirect) only
once its certificate exists. Before that its HTTP block serves nothing but
`/.well-known/acme-challenge/` from the webroot, so certbot's webroot flow can run on a
fresh host and nginx never refers to a missing certificate file.

Vhost data (one dict per public name):

    {"server_name": "music.example.com",     # required
     "upstream": "127.0.0.1:8095",           # required, loopback only
     "websocket": True,                      # Upgrade/Connection headers, long timeouts
     "locations": [{"path": "/internal/", "deny": True},
                   {"path": "/old", "return": "301 /new"},
                   {"path": "/api/", "upstream": "127.0.0.1:9000", "websocket": False},
                   {"path": "/v1/", "strip_prefix": True}],   # /v1/x -> upstream's /x
     "catch_all": False,                     # no `location /` proxy: only the locations (else 404)
     "cert": "/etc/letsencrypt/live/<name>/fullchain.pem",   # default
     "key": "/etc/letsencrypt/live/<name>/privkey.pem",      # default
     "max_body": "50m",                      # optional client_max_body_size
     "access": {"auth_file": auth_file_path("music"),   # basic auth (basic_auth_file)
                "realm": "Music Assistant",
                "allow": ["192.168.1.0/24"],             # IP allow-list (else denied)
                "satisfy": "all"}}                       # both ("any": either) when both set

Access control is for admin surfaces without a login of their own (Music Assistant 2.3,
Supabase Studio): basic auth from a secret (`basic_auth_file` writes the htpasswd,
0640 root:www-data, salted SHA-1 `{SSHA}`) and/or an IP allow-list, over the whole HTTPS
vhost. The HTTP block keeps serving ACME challenges only.

The distro's default site is disabled only while it is untouched (facts/nginx.py): an
admin's edited default, or anything else they serve through it, stays.

Adoption of an existing nginx (read from `nginx -T`, facts/nginx.py `NginxDump`): when
another file's `map` already defines $connection_upgrade, ours is not added (a second
one fails `nginx -t`); a name a server block outside our site already serves is reported
and left to that vhost (`adopted_vhosts`; deploys/parts/tls.py skips it).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.facts.files import Link, Sha256File
from pyinfra.operations import apt, files, systemd

from deploys.errors import ConfigError
from deploys.operations import secret_file
from deploys.templating import render
from facts.nginx import NginxDefaultSite, NginxDump, default_site_removable, foreign_map_of, served_elsewhere

SITES_AVAILABLE = "/etc/nginx/sites-available"
SITES_ENABLED = "/etc/nginx/sites-enabled"
WEBSOCKET_CONF = "/etc/nginx/conf.d/infra-websocket.conf"
UPGRADE_VARIABLE = "$connection_upgrade"  # defined by WEBSOCKET_CONF's map, used by _proxy.j2
BACKUP_DIR = "/var/backups/infra-nginx"

_SERVER_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")
_SITE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_LOCATION = re.compile(r"^(=\s*|~\*?\s*|\^~\s*)?/[^\s{};]*$")
_VHOST_KEYS = {"server_name", "upstream", "websocket", "locations", "cert", "key", "max_body", "catch_all", "access"}
_ACCESS_KEYS = {"auth_file", "realm", "allow", "satisfy"}
AUTH_DIR = "/etc/nginx/infra-auth"
_AUTH_USER = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_LOCATION_KEYS = {"path", "deny", "return", "upstream", "websocket", "strip_prefix"}


def cert_paths(server_name: str, live_dir: str = "/etc/letsencrypt/live") -> tuple[str, str]:
    """certbot's paths for a certificate named after its (only) name."""
    return f"{live_dir}/{server_name}/fullchain.pem", f"{live_dir}/{server_name}/privkey.pem"


def _loopback_upstream(upstream: object, where: str, problems: list[str]) -> None:
    """Backends must listen on loopback only: nginx is the single public entry."""
    text = str(upstream or "")
    address, _, port = text.rpartition(":")
    try:
        loopback = ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not (loopback and port.isdigit() and 0 < int(port) < 65536):
        problems.append(f"{where}: upstream {text!r} must be a loopback address:port (e.g. 127.0.0.1:8095)")


def _normalise_location(loc: dict, where: str, problems: list[str]) -> dict:
    unknown = sorted(set(loc) - _LOCATION_KEYS)
    if unknown:
        problems.append(f"{where}: unknown location keys {unknown}")
    if not _LOCATION.match(str(loc.get("path", ""))):
        problems.append(f"{where}: location path {loc.get('path')!r} is not a valid nginx location")
    if loc.get("upstream"):
        _loopback_upstream(loc["upstream"], where, problems)
    if loc.get("strip_prefix") and not str(loc.get("path", "")).startswith("/"):
        problems.append(f"{where}: strip_prefix needs a plain prefix location, not {loc.get('path')!r}")
    if loc.get("return") is not None and not re.match(r"^\d{3}( \S+)?$", str(loc["return"])):
        problems.append(f"{where}: return {loc['return']!r} must be 'CODE' or 'CODE URL'")
    return {
        "path": loc.get("path"),
        "deny": bool(loc.get("deny")),
        "return": loc.get("return"),
        "upstream": loc.get("upstream"),
        "websocket": loc.get("websocket"),
        "strip_prefix": bool(loc.get("strip_prefix")),
    }


def auth_file_path(site: str) -> str:
    return f"{AUTH_DIR}/{site}.htpasswd"


def _normalise_access(access: object, where: str, problems: list[str]) -> dict | None:
    """`access` of a vhost: basic auth file and/or allow-list; None when not given."""
    if access is None:
        return None
    if not isinstance(access, dict):
        problems.append(f"{where}: access must be a dict")
        return None
    unknown = sorted(set(access) - _ACCESS_KEYS)
    if unknown:
        problems.append(f"{where}: unknown access keys {unknown}")
    auth_file = access.get("auth_file")
    if auth_file is not None and not re.match(r"^/[A-Za-z0-9._/-]+$", str(auth_file)):
        problems.append(f"{where}: access auth_file {auth_file!r} must be an absolute path")
    realm = str(access.get("realm") or "Restricted")
    if not re.match(r"^[A-Za-z0-9 ._-]{1,64}$", realm):
        problems.append(f"{where}: access realm {realm!r} may hold letters, digits, space and ._- only")
    allow = []
    for net in access.get("allow") or []:
        try:
            allow.append(str(ipaddress.ip_network(str(net), strict=False)))
        except ValueError:
            problems.append(f"{where}: access allow {net!r} is not an IP network")
    satisfy = access.get("satisfy", "all")
    if satisfy not in ("all", "any"):
        problems.append(f"{where}: access satisfy {satisfy!r} must be 'all' or 'any'")
    if not auth_file and not allow:
        problems.append(f"{where}: access needs auth_file and/or allow (else it would restrict nothing)")
    return {"auth_file": auth_file, "realm": realm, "allow": allow, "satisfy": satisfy}


def render_htpasswd(users: dict, site: str) -> str:
    """`user:{SSHA}...` lines. The salt is derived from site, user and password, so the
    file (and the deploy) only change when a password does."""
    lines = []
    for user, password in sorted(users.items()):
        raw = password.unmask() if hasattr(password, "unmask") else str(password)
        if not _AUTH_USER.match(str(user)):
            raise ConfigError(f"nginx basic auth: user name {user!r} may hold letters, digits and ._@- only")
        if not raw or re.search(r"[\x00-\x1f]", raw):
            raise ConfigError(f"nginx basic auth: the password of {user!r} is empty or has a control character")
        salt = hashlib.sha256(f"infra-htpasswd:{site}:{user}:{raw}".encode()).digest()[:8]
        digest = hashlib.sha1(raw.encode() + salt).digest()
        lines.append(f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode()}")
    return "".join(line + "\n" for line in lines)


@deploy("nginx basic auth file")
def basic_auth_file(site: str, users: dict):
    """The htpasswd of `site` (see `auth_file_path`): 0640 root:www-data, never printed."""
    files.directory(name=f"nginx auth directory {AUTH_DIR}", path=AUTH_DIR, user="root", group="www-data",
                    mode="750")
    return secret_file(name=f"nginx basic auth users of {site}", dest=auth_file_path(site),
                       content=HiddenValue(render_htpasswd(users, site)), user="root", group="www-data",
                       mode="640")


@operation()
def disable_untouched_default_site():
    """Unlink sites-enabled/default only while it is the distro's untouched default."""
    removable = default_site_removable(host.get_fact(NginxDefaultSite))
    if removable is False:
        host.noop("sites-enabled/default: absent, or changed by an admin (kept)")
        return
    # None: nginx is being installed by this run; the guard re-checks on the host.
    yield StringCommand(
        "en=/etc/nginx/sites-enabled/default; av=/etc/nginx/sites-available/default;"
        " want=$(dpkg-query -W -f='${Conffiles}\\n' nginx-common | awk '$1==\"/etc/nginx/sites-available/default\" {print $2}');"
        " if [ -L \"$en\" ] && [ \"$(readlink -f \"$en\")\" = \"$av\" ] && [ -n \"$want\" ]"
        " && [ \"$(md5sum < \"$av\" | cut -d' ' -f1)\" = \"$want\" ]; then rm -f \"$en\" &&"
        " { nginx -t 2>/dev/null && systemctl reload-or-restart nginx || true; }; fi"
    )


def normalise_vhosts(vhosts: list[dict], live_dir: str = "/etc/letsencrypt/live") -> list[dict]:
    """Validate vhost data (one error naming every problem) and fill in defaults."""
    problems: list[str] = []
    result = []
    seen = set()
    if not vhosts:
        problems.append("at least one vhost is required")
    for index, vhost in enumerate(vhosts or []):
        name = str(vhost.get("server_name") or "")
        where = f"vhost {name or index}"
        if not _SERVER_NAME.match(name):
            problems.append(f"{where}: server_name {name!r} is not a DNS name")
        if name in seen:
            problems.append(f"{where}: defined twice")
        seen.add(name)
        unknown = sorted(set(vhost) - _VHOST_KEYS)
        if unknown:
            problems.append(f"{where}: unknown keys {unknown}")
        _loopback_upstream(vhost.get("upstream"), where, problems)
        cert, key = cert_paths(name, live_dir)
        result.append(
            {
                "server_name": name,
                "upstream": vhost.get("upstream"),
                "websocket": bool(vhost.get("websocket", False)),
                "locations": [_normalise_location(loc, where, problems) for loc in vhost.get("locations", [])],
                "cert": vhost.get("cert") or cert,
                "key": vhost.get("key") or key,
                "max_body": vhost.get("max_body"),
                "catch_all": bool(vhost.get("catch_all", True)),
                "access": _normalise_access(vhost.get("access"), where, problems),
            }
        )
    if problems:
        raise ConfigError("nginx site: " + "; ".join(problems))
    return result


def render_site(site: str, vhosts: list[dict], webroot: str, tls_names=(), ipv6: bool = True) -> str:
    """The site file. Only names in `tls_names` (certificate present) get HTTPS blocks."""
    if not _SITE.match(site):
        raise ConfigError(f"nginx site name {site!r} is not a valid file name")
    normalised = [{**v, "tls": v["server_name"] in set(tls_names)} for v in normalise_vhosts(vhosts)]
    return render(
        "etc/nginx/sites-available/site.j2", site=site, vhosts=normalised, webroot=webroot, ipv6=ipv6
    )


def render_websocket_conf() -> str:
    return render("etc/nginx/conf.d/infra-websocket.conf.j2")


def _sha(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def _pending(files_wanted: dict[str, str | None], links_wanted: dict[str, str | None]) -> list[str]:
    """Paths whose current state differs from the wanted one (read from the host now)."""
    pending = []
    for path, content in files_wanted.items():
        current = host.get_fact(Sha256File, path=path)
        if (content is None and current is not None) or (content is not None and current != _sha(content)):
            pending.append(path)
    for path, target in links_wanted.items():
        link = host.get_fact(Link, path=path)
        current = link.get("link_target") if link else None
        if (target is None and link) or (target is not None and current != target):
            pending.append(path)
    return pending


def _backup_script(key: str, paths: list[str]) -> StringCommand:
    """Copy the current files/links (or note their absence) to the backup dir."""
    backup = f"{BACKUP_DIR}/{key}"
    parts: list = ["set -e;", "rm -rf", QuoteString(backup), "&&", "mkdir -p", QuoteString(backup), ";"]
    for index, path in enumerate(paths):
        saved = QuoteString(f"{backup}/{index}")
        quoted = QuoteString(path)
        parts += ["if [ -e", quoted, "] || [ -L", quoted, "]; then cp -a", quoted, saved, "; else touch", QuoteString(f"{backup}/{index}.absent"), "; fi;"]
    return StringCommand(*parts)


def _apply_commands(files_wanted, links_wanted, paths):
    """Write wanted files (upload) and links, remove unwanted ones."""
    for path in paths:
        if path in files_wanted:
            content = files_wanted[path]
            if content is None:
                yield StringCommand("rm", "-f", QuoteString(path))
            else:
                yield StringCommand("mkdir", "-p", QuoteString(path.rsplit("/", 1)[0]))
                yield FileUploadCommand(BytesIO(content.encode()), path)
                yield StringCommand("chmod", "644", QuoteString(path))
        else:
            target = links_wanted[path]
            if target is None:
                yield StringCommand("rm", "-f", QuoteString(path))
            else:
                yield StringCommand("ln", "-sfn", QuoteString(target), QuoteString(path))


def _test_and_reload_script(key: str, paths: list[str], service: str) -> StringCommand:
    """`nginx -t`; on success reload (or start); on failure restore and fail with the error."""
    backup = f"{BACKUP_DIR}/{key}"
    restore: list = []
    for index, path in enumerate(paths):
        quoted = QuoteString(path)
        restore += [
            "rm -rf", quoted, ";",
            "if [ -e", QuoteString(f"{backup}/{index}"), "] || [ -L", QuoteString(f"{backup}/{index}"),
            "]; then cp -a", QuoteString(f"{backup}/{index}"), quoted, "; fi;",
        ]
    return StringCommand(
        "if out=$(nginx -t 2>&1); then systemctl reload-or-restart", QuoteString(service), ";",
        "else", *restore,
        "echo", QuoteString(f"nginx -t rejected the new config ({', '.join(paths)}); previous config restored:"),
        ">&2; echo \"$out\" >&2; exit 1; fi",
    )


@operation()
def nginx_config(
    key: str,
    files_wanted: dict[str, str | None] | None = None,
    links_wanted: dict[str, str | None] | None = None,
    service: str = "nginx",
):
    """Validated reload: write files/links, `nginx -t`, reload only if anything changed.

    `files_wanted`: path -> content (None: absent). `links_wanted`: link -> target (None:
    absent). `key` names the backup slot. When `nginx -t` fails the previous files and
    links are restored (nginx keeps serving the old config, unreloaded) and the operation
    fails with nginx's error, so a broken config is never left active.
    """
    files_wanted = dict(files_wanted or {})
    links_wanted = dict(links_wanted or {})
    paths = _pending(files_wanted, links_wanted)
    if not paths:
        host.noop(f"nginx config {key} is up to date")
        return
    host.log(f"Will update {', '.join(paths)}, then nginx -t and reload")
    yield _backup_script(key, paths)
    yield from _apply_commands(files_wanted, links_wanted, paths)
    yield _test_and_reload_script(key, paths, service)


def site_files(site: str, content: str | None) -> tuple[dict, dict]:
    """files/links arguments of `nginx_config` for one site (None content: remove it)."""
    available = f"{SITES_AVAILABLE}/{site}"
    return {available: content}, {f"{SITES_ENABLED}/{site}": available if content is not None else None}


def adopted_vhosts(site: str, names, dump: dict) -> dict[str, str]:
    """{name: file} of `names` already served by a server block outside `site`'s files
    (`dump`: the `NginxDump` fact): those vhosts are the operator's, adopted as they are."""
    own = (f"{SITES_AVAILABLE}/{site}", f"{SITES_ENABLED}/{site}")
    return served_elsewhere(dump, names, own)


@operation(is_idempotent=True)
def report_adopted(adopted: dict):
    """Say which names an existing vhost serves (kept as it is, no duplicate added)."""
    host.noop("; ".join(f"{name} is served by {path}: adopted, no vhost added" for name, path in sorted(adopted.items())))
    return
    yield  # (a generator)


@deploy("nginx installed")
def install_nginx(webroot: str = "/var/www/acme", remove_default_site: bool = True, dump: dict | None = None):
    """nginx package, the ACME webroot, the shared WebSocket map; nginx enabled + running.
    `dump`: the `NginxDump` fact when the caller read it already (else read here)."""
    apt.packages(name="nginx package", packages=["nginx"], update=True, cache_time=3600)
    files.directory(name=f"ACME webroot {webroot}", path=webroot, user="root", group="root", mode="755")
    # a `map` defining $connection_upgrade elsewhere (the operator's): a second one would
    # fail `nginx -t` ("duplicate variable"), so ours is not written (and goes if it was)
    theirs = foreign_map_of(host.get_fact(NginxDump) if dump is None else dump, UPGRADE_VARIABLE, WEBSOCKET_CONF)
    nginx_config(
        name="nginx shared config (WebSocket upgrade map)" + (f": {theirs} defines it, ours not added" if theirs else ""),
        key="infra-common",
        files_wanted={WEBSOCKET_CONF: None if theirs else render_websocket_conf()},
    )
    if remove_default_site:
        disable_untouched_default_site(name="nginx default site disabled (only if untouched)")
    systemd.service(name="nginx enabled and running", service="nginx.service", running=True, enabled=True)


@deploy("nginx site")
def nginx_site(site: str, vhosts: list[dict], webroot: str = "/var/www/acme", tls_names=(), ipv6: bool = True):
    """Render, write and enable a site through the validated reload."""
    content = render_site(site, vhosts, webroot, tls_names=tls_names, ipv6=ipv6)
    files_wanted, links_wanted = site_files(site, content)
    return nginx_config(
        name=f"nginx site {site} ({', '.join(sorted(tls_names)) or 'no TLS yet'})",
        key=site,
        files_wanted=files_wanted,
        links_wanted=links_wanted,
    )


@deploy("nginx site removed")
def remove_nginx_site(site: str):
    files_wanted, links_wanted = site_files(site, None)
    nginx_config(name=f"nginx site {site} removed", key=site, files_wanted=files_wanted, links_wanted=links_wanted)
