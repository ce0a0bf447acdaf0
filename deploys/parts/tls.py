"""Let's Encrypt certificates with certbot's webroot flow (one certificate per name, or
the existing lineage that already covers it).

Why webroot: nginx keeps serving while certbot proves control of a name by writing a
token under the webroot that nginx's HTTP block exposes at /.well-known/acme-challenge/
(see deploys/parts/nginx.py for the bootstrap order). Run it only after the DNS
preflight passed: a name that does not point here can only fail validation and burn
rate limits.

Idempotent: `certificate` reads the certificate certbot holds for the name (its names,
expiry and the ACME server it came from) and calls certbot only when there is none, it
does not cover exactly that name, it has expired, or it came from another ACME server.
A certificate the host already has for a name under another lineage (an operator's,
often multi-name: `CertbotLineages`) is reused with its whole name set, never re-issued
as single-name (`adopted_certificate`); a name another nginx vhost already serves is
adopted as it is (deploys/parts/nginx.py `adopted_vhosts`) and gets no vhost of ours.
Renewal is certbot's own systemd timer; a deploy hook reloads nginx. For a private ACME
server (pebble in tests) the CA bundle certbot must trust is uploaded and given to both
issuance and the timer's renewals (`REQUESTS_CA_BUNDLE` in a certbot.service drop-in).
"""

from __future__ import annotations

import json
import shlex
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, deploy, operation
from pyinfra.operations import apt, files, systemd

from deploys.errors import ConfigError
from deploys.parts.nginx import adopted_vhosts, install_nginx, nginx_site, remove_nginx_site, report_adopted
from facts.nginx import NginxDump

REPO = Path(__file__).resolve().parents[2]
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
CA_BUNDLE_PATH = "/etc/letsencrypt/infra-acme-ca.pem"
RENEWAL_DROP_IN = "/etc/systemd/system/certbot.service.d/infra-acme-ca.conf"
DEPLOY_HOOK = "systemctl reload nginx"

# Runs on the host: prints {"names": [...], "not_after": epoch, "server": url} or {}.
_CERT_SCRIPT = r"""
import json, re, ssl, sys, time
name = sys.argv[1]
out = {}
try:
    cert = ssl._ssl._test_decode_cert("/etc/letsencrypt/live/%s/cert.pem" % name)
    out["names"] = sorted(v for k, v in cert.get("subjectAltName", ()) if k == "DNS")
    out["not_after"] = ssl.cert_time_to_seconds(cert["notAfter"])
    out["days_left"] = int((out["not_after"] - time.time()) // 86400)
    conf = open("/etc/letsencrypt/renewal/%s.conf" % name).read()
    match = re.search(r"^server\s*=\s*(\S+)", conf, re.M)
    out["server"] = match.group(1) if match else None
except Exception as exc:
    out = {"error": type(exc).__name__}
print(json.dumps(out))
"""


class CertbotCertificate(FactBase):
    """The certificate certbot holds under `cert_name`: names, days_left, ACME server.

    None when there is none (or it cannot be read). Read from certbot's files rather
    than from nginx, so it works before nginx serves the certificate.
    """

    requires_command = "python3"

    def command(self, cert_name: str) -> str:
        return f"python3 -c {shlex.quote(_CERT_SCRIPT)} {shlex.quote(cert_name)}"

    @staticmethod
    def default():
        return None

    def process(self, output):
        data = json.loads("\n".join(output) or "{}")
        return None if not data or "error" in data else data


# Runs on the host: prints {lineage: {"names", "not_after", "days_left", "server"}} for every
# lineage certbot keeps (renewal/<lineage>.conf + live/<lineage>/cert.pem).
_LINEAGES_SCRIPT = r"""
import glob, json, os, re, ssl, time
out = {}
for conf in sorted(glob.glob("/etc/letsencrypt/renewal/*.conf")):
    name = os.path.basename(conf)[:-len(".conf")]
    try:
        cert = ssl._ssl._test_decode_cert("/etc/letsencrypt/live/%s/cert.pem" % name)
        match = re.search(r"^server\s*=\s*(\S+)", open(conf).read(), re.M)
        not_after = ssl.cert_time_to_seconds(cert["notAfter"])
        out[name] = {"names": sorted(v for k, v in cert.get("subjectAltName", ()) if k == "DNS"),
                     "not_after": not_after, "days_left": int((not_after - time.time()) // 86400),
                     "server": match.group(1) if match else None}
    except Exception:
        pass
print(json.dumps(out))
"""


class CertbotLineages(FactBase):
    """Every certificate lineage certbot holds: {lineage: {names, days_left, server}}."""

    requires_command = "python3"

    def command(self) -> str:
        return f"if [ -d /etc/letsencrypt/renewal ]; then python3 -c {shlex.quote(_LINEAGES_SCRIPT)}; fi"

    @staticmethod
    def default():
        return {}

    def process(self, output):
        return json.loads("\n".join(output) or "{}")


def lineage_for(name: str, lineages: dict) -> str | None:
    """The existing lineage to serve `name` with: ours (named after it, exactly [name]) or
    else one that already covers it - e.g. an operator's multi-name certificate, reused
    with its whole name set (never re-issued as single-name). Unexpired ones first."""
    own = lineages.get(name)
    if own and own.get("names") == [name]:
        return name
    # an expired foreign lineage is left alone (re-issuing it would rewrite its renewal
    # settings and need every one of its names to point here): ours is issued instead
    covering = [lin for lin, cert in lineages.items()
                if name in cert.get("names", []) and cert.get("days_left", -1) >= 0]
    covering.sort(key=lambda lin: (lin != name, -len(lineages[lin]["names"]), lin))
    if covering:
        return covering[0]
    return name if own else None  # a lineage with our name: certbot's --cert-name would reuse it anyway


def adopted_lineages(names, lineages: dict) -> dict[str, str]:
    """{name: lineage} for names served from a lineage that is not our own single-name one."""
    found = {}
    for name in names:
        lineage = lineage_for(name, lineages)
        if lineage is not None and not (lineage == name and lineages[lineage].get("names") == [name]):
            found[name] = lineage
    return found


_PLACEHOLDER_DOMAINS = ("example.com", "example.net", "example.org")
_RESERVED_TLDS = ("invalid", "example", "test", "localhost", "local")


def placeholder_email(email: str | None) -> bool:
    """Empty, or at a domain reserved for examples (RFC 2606/6761): no one reads it."""
    if not email or "@" not in str(email):
        return True
    domain = str(email).rsplit("@", 1)[1].lower().rstrip(".")
    return domain in _PLACEHOLDER_DOMAINS or domain.endswith(tuple(f".{d}" for d in _PLACEHOLDER_DOMAINS)) \
        or domain.rsplit(".", 1)[-1] in _RESERVED_TLDS


def acme_email_problem(email: str | None, server: str, private_ca: bool) -> str | None:
    """A public ACME server (one the system CAs trust: Let's Encrypt, ZeroSSL ...) sends
    expiry and revocation notices to this address; a placeholder loses them. A private
    one (pebble in tests, given with its own CA bundle) is fine with any address."""
    if private_ca or not placeholder_email(email):
        return None
    return (f"acme_email {email!r} is a placeholder, and {server} is a public ACME server that mails "
            "expiry and revocation notices there: set acme_email to an address someone reads")


def acme_server(directory: str, staging: bool) -> str:
    """Let's Encrypt staging when asked, else the configured directory (LE, pebble...)."""
    return LETSENCRYPT_STAGING if staging else directory


def certificate_problem(cert: dict | None, name: str, server: str) -> str | None:
    """Why certbot must (re)issue, or None when the certificate held is right."""
    if not cert:
        return "no certificate yet"
    if cert.get("names") != [name]:
        return f"certificate names {cert.get('names')} are not exactly [{name}]"
    if cert.get("days_left", -1) < 0:
        return "certificate expired"
    if cert.get("server") != server:
        return f"certificate came from {cert.get('server')}, not {server}"
    return None


def certbot_command(name: str, webroot: str, email: str, server: str, ca_bundle: str | None, force: bool,
                    domains=None):
    """certbot for the lineage `name` with `domains` (default: [name]); a multi-name
    lineage keeps all its names (`--expand`)."""
    domains = list(domains or [name])
    parts: list = []
    if ca_bundle:
        parts += ["env", QuoteString(f"REQUESTS_CA_BUNDLE={ca_bundle}")]
    parts += [
        "certbot", "certonly", "--non-interactive", "--agree-tos", "--no-eff-email",
        "--email", QuoteString(email), "--server", QuoteString(server),
        "--webroot", "-w", QuoteString(webroot), "--cert-name", QuoteString(name),
        *[arg for domain in domains for arg in ("-d", QuoteString(domain))],
        "--deploy-hook", QuoteString(DEPLOY_HOOK),
    ]
    if len(domains) > 1:
        parts.append("--expand")
    parts += ["--force-renewal"] if force else ["--keep-until-expiring"]
    return StringCommand(*parts)


@operation()
def certificate(domain: str, webroot: str, email: str, server: str, ca_bundle: str | None = None):
    """A certificate for exactly `domain` from `server`; certbot runs only when needed.

    (The argument is not called `name`: pyinfra reserves that for the operation's title.)
    """
    problem = certificate_problem(host.get_fact(CertbotCertificate, cert_name=domain), domain, server)
    if problem is None:
        host.noop(f"certificate for {domain} is valid")
        return
    host.log(f"certbot for {domain}: {problem}")
    yield certbot_command(domain, webroot, email, server, ca_bundle, force=problem != "no certificate yet")


@operation()
def adopted_certificate(lineage: str, domains: list[str], webroot: str, email: str, server: str,
                        ca_bundle: str | None = None):
    """An existing lineage (an operator's, possibly multi-name) that covers `domains`: kept
    as it is while it is valid (certbot's timer renews it). Only an expired one, or one that
    lost a name, is re-issued - under its own name, with its whole name set plus ours."""
    cert = host.get_fact(CertbotCertificate, cert_name=lineage)
    have = list((cert or {}).get("names") or [])
    if cert and set(domains) <= set(have) and cert.get("days_left", -1) >= 0:
        host.noop(f"certificate {lineage} ({', '.join(have)}) covers {', '.join(domains)}: reused")
        return
    wanted = sorted(set(have) | set(domains))
    host.log(f"certbot for lineage {lineage}: {'expired' if cert else 'unreadable'}; re-issued for {', '.join(wanted)}")
    yield certbot_command(lineage, webroot, email, server, ca_bundle, force=bool(cert), domains=wanted)


def renewal_drop_in(ca_bundle: str) -> str:
    return (
        "# Managed by pyinfra (deploys/parts/tls.py): the ACME server's CA for renewals.\n"
        f"[Service]\nEnvironment=REQUESTS_CA_BUNDLE={ca_bundle}\n"
    )


@deploy("certbot installed, renewal timer active")
def install_certbot(local_ca_bundle: str | None = None):
    """certbot, the ACME CA bundle (private ACME servers only) and the renewal timer."""
    apt.packages(name="certbot package", packages=["certbot"], update=True, cache_time=3600)
    if local_ca_bundle:
        files.put(name="ACME server CA bundle", src=local_ca_bundle, dest=CA_BUNDLE_PATH, mode="644")
        drop_in = files.put(
            name="certbot renewals trust the ACME server CA",
            src=StringIO(renewal_drop_in(CA_BUNDLE_PATH)),
            dest=RENEWAL_DROP_IN,
            mode="644",
        )
    else:
        drop_in = files.file(name="No ACME CA override for renewals", path=RENEWAL_DROP_IN, present=False)
    systemd.daemon_reload(name="Reload systemd (certbot drop-in)", _if=drop_in.did_change)
    systemd.service(name="certbot renewal timer", service="certbot.timer", running=True, enabled=True)


@deploy("TLS certificates")
def certificates(names, webroot: str, email: str, directory: str, staging: bool = False, local_ca_bundle=None):
    """One certificate per name (webroot flow). Call after the DNS preflight passed."""
    server = acme_server(directory, staging)
    ca_bundle = CA_BUNDLE_PATH if local_ca_bundle else None
    return [
        certificate(name=f"Certificate for {domain}", domain=domain, webroot=webroot, email=email,
                    server=server, ca_bundle=ca_bundle)
        for domain in names
    ]


@deploy("nginx + TLS")
def https_site(site: str, vhosts: list[dict], names: list[str], data):
    """An nginx site served over HTTPS with certbot certificates for `names`.

    Bootstrap order: names without a certificate get a challenge-only HTTP site first
    (nginx cannot load a TLS server block whose files do not exist yet), certbot proves
    them through the webroot, then the full site goes live. Names that already have a
    certificate go straight to the end, so a re-run touches nothing. `data` supplies the
    shared ACME knobs (acme_webroot, acme_email, acme_directory, acme_staging,
    acme_ca_bundle as a local path, nginx_listen_ipv6).
    """
    webroot, ipv6 = data.acme_webroot, data.nginx_listen_ipv6
    problem = acme_email_problem(data.acme_email, acme_server(data.acme_directory, data.acme_staging),
                                 private_ca=bool(data.acme_ca_bundle))
    if problem:
        raise ConfigError(f"TLS for {', '.join(names)}: {problem}")
    dump = host.get_fact(NginxDump)  # the loaded config (`nginx -T`): what to adopt
    install_nginx(webroot=webroot, dump=dump)
    install_certbot(local_ca_bundle=local_path(data.acme_ca_bundle))
    # Adopt what exists: a name another vhost already serves gets none of ours; a name an
    # existing lineage (e.g. a multi-name one) covers is served with that certificate.
    taken = adopted_vhosts(site, names, dump)
    guarded = sorted(v["server_name"] for v in vhosts if v.get("server_name") in taken and v.get("access"))
    if guarded:
        raise ConfigError(f"TLS for {', '.join(guarded)}: already served by {taken[guarded[0]]}, but our vhost "
                          "requires authentication (access); adopting theirs would publish it without: "
                          "remove that server block or serve another name")
    if taken:
        report_adopted(name=f"nginx vhosts adopted ({', '.join(sorted(taken))})", adopted=taken)
    names = [n for n in names if n not in taken]
    vhosts = [v for v in vhosts if v.get("server_name") not in taken]
    if not names:
        remove_nginx_site(site)
        return
    lineages = host.get_fact(CertbotLineages)
    reused = adopted_lineages(names, lineages)
    vhosts = [with_lineage(v, reused.get(v.get("server_name"))) for v in vhosts]
    # certbot's live/ files are symlinks (the File fact says False for them): ask certbot.
    have = [n for n in names if n in reused or host.get_fact(CertbotCertificate, cert_name=n)]
    if set(have) != set(names):
        nginx_site(site, vhosts, webroot=webroot, tls_names=have, ipv6=ipv6)
    own = [n for n in names if n not in reused]
    if own:
        certificates(
            own, webroot=webroot, email=data.acme_email, directory=data.acme_directory,
            staging=data.acme_staging, local_ca_bundle=data.acme_ca_bundle,
        )
    server = acme_server(data.acme_directory, data.acme_staging)
    for lineage in sorted(set(reused.values())):
        domains = sorted(n for n, lin in reused.items() if lin == lineage)
        adopted_certificate(name=f"Certificate {lineage} (existing, reused for {', '.join(domains)})", lineage=lineage,
                            domains=domains, webroot=webroot, email=data.acme_email, server=server,
                            ca_bundle=CA_BUNDLE_PATH if data.acme_ca_bundle else None)
    nginx_site(site, vhosts, webroot=webroot, tls_names=names, ipv6=ipv6)


def with_lineage(vhost: dict, lineage: str | None, live_dir: str = "/etc/letsencrypt/live") -> dict:
    """The vhost served with `lineage`'s certificate (unless it names its own files)."""
    if not lineage or vhost.get("cert") or vhost.get("key"):
        return vhost
    return {**vhost, "cert": f"{live_dir}/{lineage}/fullchain.pem", "key": f"{live_dir}/{lineage}/privkey.pem"}


def local_path(path: str | None) -> str | None:
    """A path on the operator's machine from data; relative paths are relative to the repo."""
    if not path:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else REPO / p)
