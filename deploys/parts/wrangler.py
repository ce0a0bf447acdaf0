"""Cloudflare Workers from the operator's machine through `wrangler`, idempotent by local
records (digests, never values): `npm ci` when a lockfile changed, `wrangler deploy
--dry-run` then `wrangler deploy --env <env>` when a worker's source or config changed,
secrets on stdin (`wrangler secret put`), an R2 bucket created once and its prefixes put
as placeholder objects once.
"""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, HiddenValue, QuoteString, StringCommand, operation

from deploys.operations import recorded
from facts.hivesync import R2Buckets


def worker_digest(toml: str, sources: list[tuple[Path, str]]) -> str:
    digest = hashlib.sha256(toml.encode())
    for path, rel in sources:
        digest.update(b"\0" + rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def secret_digest(worker: str, name: str, value: str, salt: str) -> str:
    """What the local record keeps of a pushed secret (never the value itself); `salt`
    names the application, so equal values of two apps' secrets record differently."""
    return hashlib.sha256(f"{salt}\0{worker}\0{name}\0{value}".encode()).hexdigest()


def wrangler_argv(wrangler: str, *args: str) -> list:
    return [QuoteString(wrangler), *[QuoteString(a) for a in args]]


@operation()
def npm_ci(worker: str, directory: str, lock_digest: str, npm: str = "npm"):
    """`npm ci` in the staged worker when its package-lock.json changed (wrangler bundles
    node_modules); the lockfile's digest is recorded only after a good install."""
    record = f"{directory}/.npm-ci.sha256"
    if recorded(record) == lock_digest:
        host.noop(f"worker {worker}: node_modules follow package-lock.json ({lock_digest[:12]})")
        return
    yield StringCommand(
        "cd", QuoteString(f"{directory}/src"), "&&", QuoteString(npm), "ci", "--no-audit", "--no-fund",
        "&&", "echo", QuoteString(lock_digest), ">", QuoteString(record),
    )


@operation()
def wrangler_deploy(worker: str, directory: str, digest: str, wrangler: str, deploy_env: str):
    """`wrangler deploy --dry-run` (bundles and checks the config, uploads nothing), then
    `wrangler deploy --env <env>`, when the worker's digest differs from the recorded one."""
    record = f"{directory}/.deployed.sha256"
    if recorded(record) == digest:
        host.noop(f"worker {worker} is deployed ({digest[:12]})")
        return
    args = ("--config", "wrangler.toml", "--env", deploy_env)
    yield StringCommand(
        "cd", QuoteString(directory), "&&",
        *wrangler_argv(wrangler, "deploy", "--dry-run", "--outdir", ".dry-run", *args), ">&2",
        "|| { echo", QuoteString(f"worker {worker}: wrangler deploy --dry-run failed: nothing deployed"), ">&2; exit 1; };",
        *wrangler_argv(wrangler, "deploy", *args),
        "&&", "echo", QuoteString(digest), ">", QuoteString(record),
    )


@operation()
def wrangler_secret(worker: str, directory: str, secret_name: str, value: HiddenValue, wrangler: str,
                    deploy_env: str, salt: str):
    """`wrangler secret put NAME --env <env>`, the value on stdin from a 0600 file that is
    removed right after; a digest (not the value) records what was pushed."""
    digest = secret_digest(worker, secret_name, value.unmask(), salt)
    record = f"{directory}/.secrets/{secret_name}.sha256"
    if recorded(record) == digest:
        host.noop(f"worker {worker}: secret {secret_name} is up to date")
        return
    temp = f"{directory}/.secrets/{secret_name}.value"
    yield StringCommand("mkdir", "-p", QuoteString(f"{directory}/.secrets"), "&&", "chmod", "700",
                        QuoteString(f"{directory}/.secrets"))
    yield StringCommand("rm", "-f", QuoteString(temp), "&&", "install", "-m", "600", "/dev/null", QuoteString(temp))
    yield FileUploadCommand(BytesIO(value.unmask().encode()), temp)
    yield StringCommand(
        "cd", QuoteString(directory), "&&",
        *wrangler_argv(wrangler, "secret", "put", secret_name, "--config", "wrangler.toml", "--env", deploy_env),
        "<", QuoteString(temp), ">/dev/null; rc=$?;", "rm -f", QuoteString(temp), ";",
        '[ "$rc" -eq 0 ] &&', "echo", QuoteString(digest), ">", QuoteString(record),
    )


@operation()
def r2_bucket(bucket: str, wrangler: str):
    """The plan's "Create R2 bucket": `wrangler r2 bucket create` only when the account
    does not list it; fails (changing nothing) when wrangler cannot list buckets."""
    buckets = host.get_fact(R2Buckets, wrangler=wrangler)
    if buckets is None:
        message = (f"{wrangler} r2 bucket list failed: log wrangler in "
                   "(`wrangler login` or CLOUDFLARE_API_TOKEN) before deploying the workers")
        yield StringCommand("echo", QuoteString(message), ">&2", "&&", "false")
        return
    if bucket in buckets:
        host.noop(f"R2 bucket {bucket} exists")
        return
    yield StringCommand(*wrangler_argv(wrangler, "r2", "bucket", "create", bucket))


@operation()
def r2_placeholders(bucket: str, prefixes: list[str], record: str, wrangler: str):
    """The plan's N.6.3 structure: one empty object per prefix (`previews/`, ...), put once
    per bucket and prefix list (a local record; putting again would only overwrite them)."""
    digest = hashlib.sha256(("\0".join([bucket, *sorted(prefixes)])).encode()).hexdigest()
    if recorded(record) == digest:
        host.noop(f"R2 bucket {bucket}: {', '.join(prefixes)} exist")
        return
    empty = f"{record}.empty"
    puts = []
    for prefix in prefixes:
        puts += [*wrangler_argv(wrangler, "r2", "object", "put", f"{bucket}/{prefix}", "--file", empty, "--remote"), "&&"]
    yield StringCommand(": >", QuoteString(empty), "&&", *puts, "echo", QuoteString(digest), ">", QuoteString(record),
                        "; rc=$?; rm -f", QuoteString(empty), "; exit $rc")
