"""HiveSync's environment variables as a schema (plan N.3, and the backend's own settings:
backend/app/config.py at upstream c5680a2), checked before pyinfra connects.

group_data/hivesync.py annotates its knobs with the constraints below, so deploys/settings.py
checks them with every other knob (one ConfigError listing every problem):

    hivesync_backend_env: BackendEnv(ai_models=hivesync_ai_models) = {...}
    hivesync_r2_bucket: R2_BUCKET_NAME = "hivesync-r2"
    hivesync_r2_endpoint: OPTIONAL_HTTPS_URL = None

Each variable has a kind: port (int 1-65535), int (with a range), bool (True/False or the
strings true/false/1/0), choice (from a list), ai_model (from hivesync_ai_models), host,
name, path (absolute), url (http(s); https required in production: DEPLOY_ENV=prod),
text. A variable that is set in one place elsewhere (PORT: hivesync_backend_port;
BASE_URL: hivesync_domain; R2_BUCKET: hivesync_r2_bucket; R2_ENDPOINT:
hivesync_r2_endpoint; the secrets: .env or generated on the host) is refused here.
deploys/hivesync.py checks the same schema again on the effective data (and the
workers' variables, which it derives), so a `--data` override of the list is honoured.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from deploys.settings import Constraint

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# Cloudflare R2: 3-63 characters, lowercase letters, digits and hyphens, not at the ends.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class Var:
    kind: str
    choices: tuple = ()
    minimum: int | None = None
    maximum: int | None = None
    optional: bool = False  # may be "" or None (left unset for the app)


BACKEND = {
    "POSTGRES_HOST": Var("host"),
    "POSTGRES_PORT": Var("port"),
    "POSTGRES_DB": Var("name"),
    "POSTGRES_USER": Var("name"),
    "REDIS_HOST": Var("host"),
    "REDIS_PORT": Var("port"),
    "EMAIL_PROVIDER": Var("choice", ("resend", "smtp", "none")),
    "AI_PRIMARY": Var("choice", ("openai", "local")),
    "AI_MODEL": Var("ai_model"),
    "LOCAL_AI_ENABLED": Var("bool"),
    "LOCAL_AI_MODEL_PATH": Var("path"),
    "PREVIEW_MAX_TIMEOUT_MS": Var("int", minimum=1000, maximum=600_000),
    "LOG_LEVEL": Var("choice", ("debug", "info", "warning", "error", "critical")),
    "R2_PUBLIC_BASE_URL": Var("url", optional=True),
    # config.py's other settings (optional; the app's defaults apply when unset)
    "AUTH_EMAIL_ENABLED": Var("bool", optional=True),
    "AUTH_GOOGLE_CLIENT_ID": Var("text", optional=True),
    "AUTH_APPLE_CLIENT_ID": Var("text", optional=True),
    "AUTH_APPLE_TEAM_ID": Var("text", optional=True),
    "AUTH_APPLE_KEY_ID": Var("text", optional=True),
    "LZ_STORE_ID": Var("text", optional=True),
    "LZ_PRO_MONTHLY_VARIANT_ID": Var("text", optional=True),
    "LZ_PRO_YEARLY_VARIANT_ID": Var("text", optional=True),
    "LZ_PREMIUM_MONTHLY_VARIANT_ID": Var("text", optional=True),
    "LZ_PREMIUM_YEARLY_VARIANT_ID": Var("text", optional=True),
    **{f"WORKER_{q}_QUEUE": Var("name", optional=True) for q in ("PREVIEW", "AI", "MAP", "BILLING", "DELETION", "DLQ")},
}
# Set in one place elsewhere: never in hivesync_backend_env.
ELSEWHERE = {
    "PORT": "hivesync_backend_port",
    "BASE_URL": "hivesync_domain (https://<domain>)",
    "R2_BUCKET": "hivesync_r2_bucket (the backend and the workers share it)",
    "R2_ENDPOINT": "hivesync_r2_endpoint (or derived from R2_ACCOUNT_ID)",
}
# The workers' variables (plan N.3), all derived by deploys/hivesync.py from the knobs above.
WORKERS = {
    "R2_BUCKET": Var("bucket"),
    "R2_PREFIXES": Var("text"),
    "WORKER_CALLBACK_URL": Var("url"),
    "AI_MODEL": Var("ai_model"),
}


def production(environ=os.environ) -> bool:
    return environ.get("DEPLOY_ENV", "test") == "prod"


def url_problem(value: str, https: bool) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{value!r} is not an http(s) URL"
    if https and parts.scheme != "https":
        return f"{value!r} must be https in production"
    return None


def var_problem(var: Var, value: Any, ai_models: list[str], https: bool) -> str | None:
    """Why `value` does not fit `var`, or None."""
    if value is None or value == "":
        return None if var.optional else "is empty"
    kind = var.kind
    if kind == "bool":
        ok = isinstance(value, bool) or (isinstance(value, str) and value.lower() in TRUE + FALSE)
        return None if ok else f"{value!r} is not a boolean (true/false)"
    if kind in ("port", "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{value!r} is not an integer"
        low, high = (1, 65535) if kind == "port" else (var.minimum, var.maximum)
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{value} is out of range {low}-{high}"
        return None
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    if kind == "choice" and value not in var.choices:
        return f"{value!r} is not one of {', '.join(var.choices)}"
    if kind == "ai_model" and value not in ai_models:
        return f"{value!r} is not one of hivesync_ai_models ({', '.join(ai_models)})"
    if kind == "host" and not _HOST.match(value):
        return f"{value!r} is not a host name"
    if kind == "name" and not _NAME.match(value):
        return f"{value!r} is not a plain name (letters, digits, _ and -)"
    if kind == "path" and not value.startswith("/"):
        return f"{value!r} is not an absolute path"
    if kind == "bucket" and (not _BUCKET.match(value) or "--" in value):
        return f"{value!r} is not an R2 bucket name (3-63 lowercase letters, digits, hyphens)"
    if kind == "url":
        return url_problem(value, https)
    return None


def env_problems(env: dict, schema: dict[str, Var], ai_models: list[str], https: bool,
                 knob: str = "hivesync_backend_env", elsewhere: dict[str, str] | None = None) -> list[str]:
    """Every variable of `env` that is unknown, set elsewhere, or of the wrong kind."""
    problems = []
    for name, value in env.items():
        if name in (elsewhere or {}):
            problems.append(f"{knob}: {name} is set in one place, {(elsewhere or {})[name]}")
        elif name not in schema:
            problems.append(f"{knob}: {name} is not a variable the backend reads (deploys/env_schema.py)")
        elif problem := var_problem(schema[name], value, ai_models, https):
            problems.append(f"{knob}: {name} {problem}")
    missing = [n for n, v in schema.items() if not v.optional and n not in env]
    if missing:
        problems.append(f"{knob}: missing {', '.join(missing)}")
    return problems


def env_text(value: Any) -> str:
    """How a value is written into an env file (booleans as true/false)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class BackendEnv(Constraint):
    """hivesync_backend_env against BACKEND (see module doc)."""

    name = "HiveSync backend environment (deploys/env_schema.py)"
    base = dict

    def __init__(self, ai_models: list[str]):
        self.ai_models = list(ai_models)

    def problem(self, value: Any) -> str | None:
        problems = env_problems(value, BACKEND, self.ai_models, production(), knob="", elsewhere=ELSEWHERE)
        return "; ".join(p.removeprefix(": ") for p in problems) or None


class _Bucket(Constraint):
    name = "R2 bucket name"
    base = str

    def problem(self, value: Any) -> str | None:
        return var_problem(Var("bucket"), value, [], False)


class _HttpsUrl(Constraint):
    """An http(s) URL, https in production, or None."""

    name = "URL (https in production) or None"
    base = (str, type(None))

    def problem(self, value: Any) -> str | None:
        return None if value is None else url_problem(value, production())


R2_BUCKET_NAME = _Bucket()
OPTIONAL_HTTPS_URL = _HttpsUrl()
