"""HiveSync's Cloudflare workers as data: their wrangler.toml ([env.dev] for `wrangler
dev` against the local backend, [env.production] against https://<domain>; the R2
binding, WORKER_CALLBACK_URL, routes and cron triggers), and their source files. The
wrangler operations themselves are in deploys/parts/wrangler.py.
"""

from __future__ import annotations

import hashlib
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.operations import files

from deploys.errors import ConfigError
from deploys.parts.hivesync_stack import _local, base_url
from deploys.parts.wrangler import npm_ci
from deploys.templating import render
from facts.http import HttpHealth, describe

WRANGLER_TEMPLATE = "home/.local/state/hivesync/workers/wrangler.toml.j2"


def script_name(worker: str) -> str:
    """Cloudflare script names: lowercase letters, digits and dashes."""
    return "hivesync-" + worker.replace("_", "-")


def worker_envs(data) -> list[dict]:
    """[env.dev] talks to the local backend (`wrangler dev`, role local_dev: no nginx, so
    without the /api prefix nginx strips); [env.production] to https://<domain>."""
    dev_path = data.hivesync_callback_path
    if data.hivesync_strip_api_prefix and dev_path.startswith(data.hivesync_api_prefix):
        dev_path = "/" + dev_path[len(data.hivesync_api_prefix):]
    urls = {"production": base_url(data) + data.hivesync_callback_path,
            "dev": (data.get("hivesync_dev_base_url") or "http://127.0.0.1:4000") + dev_path}
    return [
        {
            "name": env,
            "bucket": data.hivesync_r2_bucket,
            "vars": {
                "R2_BUCKET": data.hivesync_r2_bucket,
                "R2_PREFIXES": ",".join(data.hivesync_r2_prefixes),
                "WORKER_CALLBACK_URL": urls.get(env, urls["production"]),
                "AI_MODEL": str((data.hivesync_backend_env or {}).get("AI_MODEL", "")),
            },
        }
        for env in data.hivesync_wrangler_envs
    ]


def worker_routes(spec: dict) -> list[dict]:
    """A worker's routes (its `routes`: "host/path*" or {"pattern", "zone_name"|"custom_domain"})."""
    return [r if isinstance(r, dict) else {"pattern": r} for r in spec.get("routes") or []]


def render_wrangler_toml(data, worker: str) -> str:
    """Routes and cron triggers (the worker's data) go to the deploy env only; [env.dev]
    runs under `wrangler dev`."""
    spec = data.hivesync_workers[worker]
    deploy_env = data.hivesync_wrangler_deploy_env
    envs = [{**e, "script_name": f"{script_name(worker)}-{e['name']}",
             "routes": worker_routes(spec) if e["name"] == deploy_env else [],
             "crons": list(spec.get("crons") or []) if e["name"] == deploy_env else []}
            for e in worker_envs(data)]
    return render(WRANGLER_TEMPLATE, worker=worker, name=script_name(worker), main=f"src/{spec.get('main', 'index.js')}",
                  compatibility_date=data.hivesync_wrangler_compatibility_date, envs=envs,
                  r2_binding=data.hivesync_r2_binding, secrets=data.hivesync_worker_secrets)


def worker_sources(data, worker: str) -> list[tuple[Path, str]]:
    src = _local(data.hivesync_workers_src) / worker
    if not src.is_dir():
        raise ConfigError(f"hivesync: worker {worker}: no source directory {src} (hivesync_workers_src)")
    return [(p, p.relative_to(src).as_posix()) for p in sorted(src.rglob("*"))
            if p.is_file() and "node_modules" not in p.parts and not p.name.startswith(".env")]


def enabled_workers(data) -> tuple[Path | None, list[str], list[str]]:
    """(the workers folder, the enabled workers, the enabled ones without a folder there)."""
    src = _local(data.hivesync_workers_src)
    enabled = [w for w, spec in data.hivesync_workers.items() if spec.get("enabled", True)]
    missing = [w for w in enabled if not (src / w).is_dir()] if src is not None and src.is_dir() else []
    return src, enabled, missing


def stage_worker(data, worker: str, directory: str) -> tuple[str, list[tuple[Path, str]], object]:
    """A worker's source and wrangler.toml under `directory` (0700), `npm ci` when its
    lockfile changed: (the toml, the sources, the toml's operation)."""
    toml = render_wrangler_toml(data, worker)
    sources = worker_sources(data, worker)
    files.directory(name=f"{directory}/src", path=f"{directory}/src", mode="700")
    for path, rel in sources:
        files.put(name=f"{worker}: src/{rel}", src=str(path), dest=f"{directory}/src/{rel}", mode="644")
    toml_op = files.put(name=f"{worker}: wrangler.toml", src=StringIO(toml), dest=f"{directory}/wrangler.toml",
                        mode="644")
    lock = _local(data.hivesync_workers_src) / worker / "package-lock.json"
    if lock.is_file():
        npm_ci(name=f"npm ci {worker} (when package-lock.json changed)", worker=worker, directory=directory,
               lock_digest=hashlib.sha256(lock.read_bytes()).hexdigest(), npm=data.hivesync_npm)
    return toml, sources, toml_op


def workers_problems(data) -> list[str]:
    """Why the workers cannot be deployed from here now (prepare time, changes nothing)."""
    problems = []
    src, _, missing = enabled_workers(data)
    if src is None or not src.is_dir():
        problems.append(f"no workers folder {src} (hivesync_workers_src): the HiveSync checkout has no Cloudflare "
                        "workers yet, so there is nothing to deploy from this machine; the server role is unaffected")
    elif missing:
        problems.append(f"workers {', '.join(missing)} have no folder under {src} (hivesync_workers_src); "
                        "disable them in hivesync_workers or add their source")
    # The plan: SSL must succeed before Worker callbacks are allowed.
    url = f"https://{data.hivesync_domain}{data.hivesync_public_health_path}"
    health = host.get_fact(HttpHealth, url=url, ca_file=data.get("hivesync_workers_ca_file"))
    if not (health and health.get("ok")):
        problems.append(f"the backend does not answer over HTTPS yet ({url}: {describe(health)}); deploy the server "
                        "role first - workers call back only over verified TLS")
    return problems
