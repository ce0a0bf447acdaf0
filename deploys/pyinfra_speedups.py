"""Three costs of pyinfra 3.10's CLI that grow with the deploy, removed without changing
what pyinfra computes. Installed by inventory.py, before group data and deploy code load.

- Group data: for every name a group_data file defines, pyinfra re-parses that file
  (`_get_imported_names`, inside a list comprehension): 369 parses for our 14 files, about
  a tenth of a second per run. Memoized per file (path, size, mtime).
- Operation order: for every operation, pyinfra walks the call stack with
  `inspect.stack()`, which reads source lines for every frame; only filenames and line
  numbers are used. Asked with no source context: the same filenames and line numbers.
- Global arguments: `all_global_arguments()` evaluates the type hints of every global
  argument on each call (each fact class defined, each operation and fact called). They
  are static: computed once, a fresh list handed out each time.

Written against pyinfra 3.10 (pyproject pins >=3.10,<3.11). `install()` patches nothing,
and says so in pyinfra's debug log, unless pyinfra is a 3.10 release and every attribute
it replaces exists: a newer pyinfra runs unpatched, only slower.
"""

from __future__ import annotations

import inspect
import os

SUPPORTED = "3.10."
# (module, attribute) pairs install() replaces
TARGETS = (("pyinfra_cli.inventory", "_get_imported_names"), ("pyinfra.api.util", "stack"),
           ("pyinfra.api.util", "getframeinfo"), ("pyinfra.api.arguments", "all_global_arguments"),
           ("pyinfra.api.facts", "all_global_arguments"))
_INSTALLED = []


def applicable(version: str | None = None) -> str | None:
    """Why the patches do not apply to this pyinfra (None: they do)."""
    import importlib

    import pyinfra

    version = version or pyinfra.__version__
    if not version.startswith(SUPPORTED):
        return f"pyinfra {version} is not {SUPPORTED}x"
    for module, attribute in TARGETS:
        if not callable(getattr(importlib.import_module(module), attribute, None)):
            return f"{module}.{attribute} is gone"
    return None


def _memoized_imported_names(original):
    cache: dict[tuple, frozenset] = {}

    def imported_names(filename: str) -> set[str]:
        st = os.stat(filename)
        key = (os.path.abspath(filename), st.st_size, st.st_mtime_ns)
        if key not in cache:
            cache[key] = frozenset(original(filename))
        return set(cache[key])

    imported_names.original = original
    return imported_names


def _stack(context: int = 0):
    return inspect.stack(context)[1:]  # from the caller's frame, as inspect.stack() there


def _getframeinfo(frame, context: int = 0):
    return inspect.getframeinfo(frame, context)


def _once(original):
    computed = []

    def all_global_arguments():
        if not computed:
            computed.append(tuple(original()))
        return list(computed[0])

    all_global_arguments.original = original
    return all_global_arguments


def install(version: str | None = None) -> bool:
    """Patch pyinfra when it is the version these were written for; True when patched."""
    if _INSTALLED:
        return True
    if reason := applicable(version):
        from pyinfra import logger

        logger.debug(f"pyinfra_speedups not installed: {reason}")
        return False
    from pyinfra.api import arguments, facts, util
    from pyinfra_cli import inventory

    arguments.all_global_arguments = facts.all_global_arguments = _once(arguments.all_global_arguments)

    inventory._get_imported_names = _memoized_imported_names(inventory._get_imported_names)
    util.stack = _stack
    util.getframeinfo = _getframeinfo
    _INSTALLED.append(True)
    return True
