"""Costs of pyinfra 3.10's CLI that grow with the deploy, removed without changing
what pyinfra computes. Installed by inventory.py, before group data and deploy code load.

- Group data: for every name a group_data file defines, pyinfra re-parses that file
  (`_get_imported_names`, inside a list comprehension): 369 parses for our 14 files, about
  a tenth of a second per run. Memoized per file (path, size, mtime).
- Operation order: for every operation (per host), pyinfra walks the call stack with
  `inspect.stack()` and `getframeinfo()`, which look up each frame's source file and
  module; only filenames and line numbers are used. Read from the frames themselves
  (`_operation_order_from_stack`): the same numbers, about a tenth of the time. The
  inspect calls pyinfra makes elsewhere are asked with no source context.
- Connectors: pyinfra reads the installed connectors from every distribution's entry
  points at each ask (five per run, more with more hosts): read once per process.
- Global arguments: `all_global_arguments()` evaluates the type hints of every global
  argument on each call (each fact class defined, each operation and fact called). They
  are static: computed once, a fresh list handed out each time.
- The Users fact (every `server.user`, and the service part's account check): pyinfra's
  command forks ~9 processes per account (grep, lastlog, id ×2, ...), about 0.5 s of the
  host's CPU on a stock Debian: the slowest command of a no-op, and ten hosts sharing a
  machine pay it ten times. `USERS_COMMAND` reads /etc/group, /etc/shadow, /etc/passwd and
  one `lastlog` listing in a single awk pass and prints the same lines (`id -gn`/`id -Gn`
  as glibc's files backend gives them: the primary group, then every other group line
  naming the account, in file order). Replaced only when pyinfra's command is the 3.10
  text it was checked against (USERS_COMMAND_OF).

Written against pyinfra 3.10 (pyproject pins >=3.10,<3.11). `install()` patches nothing,
and says so in pyinfra's debug log, unless pyinfra is a 3.10 release and every attribute
it replaces exists: a newer pyinfra runs unpatched, only slower.
"""

from __future__ import annotations

import inspect
import os
import sys

SUPPORTED = "3.10."
# (module, attribute) pairs install() replaces
TARGETS = (("pyinfra_cli.inventory", "_get_imported_names"), ("pyinfra.api.util", "stack"),
           ("pyinfra.api.util", "getframeinfo"), ("pyinfra.api.arguments", "all_global_arguments"),
           ("pyinfra.api.facts", "all_global_arguments"), ("pyinfra.api.operation", "get_operation_order_from_stack"),
           ("pyinfra.api.connectors", "get_all_connectors"), ("pyinfra.api.connectors", "get_execution_connectors"),
           ("pyinfra.api.inventory", "get_all_connectors"), ("pyinfra.api.inventory", "get_execution_connectors"))
_INSTALLED = []

# sha256 of pyinfra 3.10's Users command, the one USERS_COMMAND prints the same lines as
USERS_COMMAND_OF = "50ce8b7816cb86391ab25ad71d46c9edfae0661f0112e53288b8f1bb0bdbc735"
USERS_COMMAND = r"""{ echo '#G'; cat /etc/group; echo '#S'; (cat /etc/shadow || cat /etc/master.passwd) 2>/dev/null; echo '#L'; ( (lastlog || lastlogin) 2>/dev/null ) | tr -s ' '; echo '#P'; cat /etc/passwd; } | awk '
/^#[GSLP]$/ { part = substr($0, 2); next }
part == "G" { split($0, f, ":"); if (!(f[3] in gname)) gname[f[3]] = f[1]; n++; gid[n] = f[3]; members[n] = "," f[4] ","; next }
part == "S" { split($0, f, ":"); if (!(f[1] in secret)) secret[f[1]] = f[2]; next }
part == "L" { split($0, f, " "); if (!(f[1] in login)) login[f[1]] = $0; next }
part == "P" && $0 != "" {
    split($0, f, ":"); name = f[1]
    primary = (f[4] in gname) ? gname[f[4]] : f[4]
    groups = primary
    for (k = 1; k <= n; k++) if (gid[k] != f[4] && index(members[k], "," name ",")) groups = groups " " gname[gid[k]]
    print $0 "|" primary "|" groups "|" login[name] "|" secret[name]
}'"""


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


def _operation_order_from_stack(state):
    """pyinfra.api.util.get_operation_order_from_stack without `inspect`: the same frames'
    file names and line numbers, read from the frames themselves. inspect.getframeinfo
    looks up each frame's module and source file (a stat, and for a frame without a file,
    such as gevent's, a scan of sys.modules) only to return the code's own file name."""
    import pyinfra
    from pyinfra.api.util import PYINFRA_INSTALL_DIR

    frames = []
    frame = sys._getframe(1)  # the caller's, as pyinfra's own frame is skipped below
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    start = 0
    if state.current_deploy_filename:  # the first frame of the deploy file, else the last
        for start, frame in enumerate(frames):
            if frame.f_code.co_filename == state.current_deploy_filename:
                break
    line_numbers = [state.current_op_file_number] if pyinfra.is_cli else []
    line_numbers += [f.f_lineno for f in frames[start:] if not f.f_code.co_filename.startswith(PYINFRA_INSTALL_DIR)]
    return line_numbers


def _memoized_connectors(original):
    """The installed connectors: read from the package metadata (every distribution's entry
    points) once per process, not at each of pyinfra's and settings.py's asks."""
    found = []

    def connectors():
        if not found:
            found.append(original())
        return dict(found[0])

    connectors.original = original
    return connectors


def _users_command(self) -> str:
    return USERS_COMMAND


def _replace_users_command() -> bool:
    import hashlib

    from pyinfra.facts.server import Users

    if getattr(Users.command, "fast", False):
        return True
    if hashlib.sha256(Users().command().encode()).hexdigest() != USERS_COMMAND_OF:
        return False
    _users_command.fast = True
    _users_command.original = Users.command
    Users.command = _users_command
    return True


def install(version: str | None = None) -> bool:
    """Patch pyinfra when it is the version these were written for; True when patched."""
    if _INSTALLED:
        return True
    if reason := applicable(version):
        from pyinfra import logger

        logger.debug(f"pyinfra_speedups not installed: {reason}")
        return False
    import importlib

    from pyinfra.api import arguments, connectors, facts, util
    from pyinfra_cli import inventory

    # the modules (pyinfra.api's own `operation` name is the decorator)
    operation = importlib.import_module("pyinfra.api.operation")
    api_inventory = importlib.import_module("pyinfra.api.inventory")

    arguments.all_global_arguments = facts.all_global_arguments = _once(arguments.all_global_arguments)
    operation.get_operation_order_from_stack = _operation_order_from_stack
    all_connectors = _memoized_connectors(connectors.get_all_connectors)
    execution_connectors = _memoized_connectors(connectors.get_execution_connectors)
    connectors.get_all_connectors = api_inventory.get_all_connectors = all_connectors
    connectors.get_execution_connectors = api_inventory.get_execution_connectors = execution_connectors

    inventory._get_imported_names = _memoized_imported_names(inventory._get_imported_names)
    util.stack = _stack
    util.getframeinfo = _getframeinfo
    if not _replace_users_command():
        from pyinfra import logger

        logger.debug("pyinfra_speedups: the Users fact's command is not 3.10's; kept")
    _INSTALLED.append(True)
    return True
