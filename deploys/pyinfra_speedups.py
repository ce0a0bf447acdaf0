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
"""

from __future__ import annotations

import inspect
import os

_INSTALLED = []


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


def install() -> None:
    if _INSTALLED:
        return
    from pyinfra.api import arguments, facts, util
    from pyinfra_cli import inventory

    arguments.all_global_arguments = facts.all_global_arguments = _once(arguments.all_global_arguments)

    inventory._get_imported_names = _memoized_imported_names(inventory._get_imported_names)
    util.stack = _stack
    util.getframeinfo = _getframeinfo
    _INSTALLED.append(True)
