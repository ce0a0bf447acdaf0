"""Env files assembled ON the host: secrets generated there once, plus the operator's values.

Why on the host: a database password or a JWT signing key the stack needs but no person
does should never exist on the operator's machine, in a tracked file or in pyinfra's
output. The host-side script (templates/usr/local/lib/infra/generated-env.py) keeps the
generated values in `<secrets_dir>/generated.env` (0600, made once, never regenerated)
and writes the target file = generated + `<secrets_dir>/user.env` (what the deploy
uploads: data and secrets from .env). Used by archon and hivesync.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from pyinfra import host
from pyinfra.api import HiddenValue, QuoteString, StringCommand, operation

from deploys import secrets
from deploys.templating import TEMPLATES
from facts.generated_env import GeneratedEnvStatus

ENV_SCRIPT = (TEMPLATES / "usr/local/lib/infra/generated-env.py").read_text()


def user_secrets(data, optional: Iterable[str] = ()) -> dict:
    """.env values the stack gets: `required_secrets` must be set, `optional` may be empty."""
    values = secrets.load()
    found = secrets.get(list(data.required_secrets), values)
    for name in optional or []:
        raw = values.get(name)
        found[name] = HiddenValue("" if secrets.is_placeholder(raw) else raw)
    return found


def env_spec(secrets_dir: str, target: str, random: dict[str, int], header: str, jwt: dict[str, str] | None = None,
             jwt_secret: str = "JWT_SECRET", jwt_expiry_s: int = 0) -> dict:
    """The host script's SPEC: `random` name -> bytes; `jwt` name -> role, signed with
    `jwt_secret` for `jwt_expiry_s` seconds; `header` tops the target file."""
    return {
        "generated": f"{secrets_dir}/generated.env",
        "user": f"{secrets_dir}/user.env",
        "target": target,
        "random": dict(random),
        "jwt": dict(jwt or {}),
        "jwt_secret": jwt_secret,
        "jwt_expiry_s": int(jwt_expiry_s),
        "header": header,
    }


@operation()
def stack_env(spec: dict):
    """The stack's env file, assembled ON the host; generated secrets made once, never shown.

    The script checks first (names only); it runs only when a generated secret is missing
    or the file is not what it should be.
    """
    spec_json = json.dumps(spec, sort_keys=True)
    status = host.get_fact(GeneratedEnvStatus, script=ENV_SCRIPT, spec=spec_json)
    if status and status.get("error"):
        yield StringCommand("echo", QuoteString(f"{spec['target']}: {status['error']}"), ">&2;", "exit", "1")
        return
    if status and status.get("ok"):
        host.noop(f"{spec['target']} is up to date")
        return
    if status and status.get("carried"):
        host.log(f"{spec['target']}: carrying over {', '.join(status['carried'])} from the old layout")
    missing = status["missing"] if status else list(spec["random"]) + list(spec["jwt"])
    host.log(f"{spec['target']}: " + (f"generating {', '.join(missing)} on the host" if missing else "rewriting"))
    yield StringCommand("python3", "-c", QuoteString(ENV_SCRIPT), "apply", QuoteString(spec_json))
