"""Secrets: only from the environment or an untracked `.env`, never from tracked files.

A deploy declares the names it needs in its group data (`required_secrets`). They are
checked before pyinfra connects to any host (the inventory calls `check_required`), and
values reach operations wrapped in `HiddenValue` so pyinfra never prints them. What a host
prints back (a failed command's stderr, journal lines quoted in a failed gate) is masked in
pyinfra's log as well (`mask_in_logs`): every value handed out by `get` shows as `***`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from dotenv import dotenv_values
from pyinfra.api import HiddenValue

from deploys.errors import SecretsMissing

REPO_ROOT = Path(__file__).resolve().parent.parent

# Values that mean "the operator has not filled this in yet".
_PLACEHOLDER = re.compile(r"^(|REPLACE_ME.*|CHANGE_?ME.*|<.*>|YOUR_.*|xxx+|TODO)$", re.IGNORECASE)


def env_file() -> Path:
    """The `.env` to read: `$INFRA_ENV_FILE` or `.env` at the repository root."""
    return Path(os.environ.get("INFRA_ENV_FILE") or REPO_ROOT / ".env")


def load(environ: dict[str, str] | None = None, path: Path | None = None) -> dict[str, str]:
    """Merge `.env` and the process environment; the environment wins.

    Nothing is written to `os.environ`, so secrets do not leak into child processes.
    """
    path = path or env_file()
    values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.exists() else {}
    values.update(os.environ if environ is None else environ)
    return values


def is_placeholder(value: str | None) -> bool:
    return value is None or bool(_PLACEHOLDER.match(value.strip()))


def missing(names: list[str], values: dict[str, str]) -> list[str]:
    """Names whose value is absent, empty or a placeholder, in declaration order."""
    return [n for n in names if is_placeholder(values.get(n))]


def check_required(names_by_system: dict[str, list[str]], values: dict[str, str] | None = None) -> None:
    """Raise one error naming every missing secret of every system about to be deployed."""
    values = load() if values is None else values
    problems = [
        f"{system}: {', '.join(gone)}"
        for system, names in names_by_system.items()
        if (gone := missing(names, values))
    ]
    if problems:
        raise SecretsMissing(
            "missing or placeholder secrets (set them in .env or the environment; "
            f"see .env.example): {'; '.join(problems)}"
        )


def get(names: list[str], values: dict[str, str] | None = None) -> dict[str, HiddenValue]:
    """The named secrets, masked for pyinfra's output; raises if any is missing."""
    values = load() if values is None else values
    check_required({"deploy": names}, values)
    remember(values[n] for n in names)
    return {n: HiddenValue(values[n]) for n in names}


MASK = "***"
MIN_MASKED_LENGTH = 6  # shorter values ("1", "true") would mask ordinary words
_KNOWN: set[str] = set()


def remember(values) -> None:
    """Mask these values wherever pyinfra's log would show them."""
    _KNOWN.update(v for v in values if isinstance(v, str) and len(v) >= MIN_MASKED_LENGTH)


def mask(text: str) -> str:
    for value in sorted(_KNOWN, key=len, reverse=True):  # a secret containing another first
        text = text.replace(value, MASK)
    return text


class _MaskSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _KNOWN:
            text = record.getMessage()
            if (masked := mask(text)) != text:
                record.msg, record.args = masked, None
        return True


def mask_in_logs(logger: logging.Logger | None = None) -> None:
    """Mask known secrets in every record pyinfra's log prints: on the logger (records
    logged to it) and its handlers (records of its child loggers). Once per handler."""
    logger = logger or logging.getLogger("pyinfra")
    for target in (logger, *logger.handlers):
        if not any(isinstance(f, _MaskSecrets) for f in target.filters):
            target.addFilter(_MaskSecrets())
