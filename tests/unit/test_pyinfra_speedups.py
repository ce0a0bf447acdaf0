"""deploys/pyinfra_speedups.py: each replacement computes what pyinfra's original does."""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from types import SimpleNamespace

from pyinfra.api import arguments, facts, util
from pyinfra_cli import inventory

from deploys import pyinfra_speedups

REPO = Path(__file__).resolve().parents[2]


def test_installed_by_the_inventory_and_idempotent():
    pyinfra_speedups.install()
    pyinfra_speedups.install()
    assert inventory._get_imported_names.original.__name__ == "_get_imported_names"
    assert facts.all_global_arguments is arguments.all_global_arguments


def test_imported_names_equal_pyinfras_and_follow_edits(tmp_path):
    pyinfra_speedups.install()
    original = inventory._get_imported_names.original
    for path in sorted((REPO / "group_data").glob("*.py")):
        assert inventory._get_imported_names(str(path)) == original(str(path)), path
    data = tmp_path / "g.py"
    data.write_text("import os\nx = 1\n")
    assert inventory._get_imported_names(str(data)) == {"os"}
    data.write_text("import os\nfrom json import dumps as d\nx = 1\n")
    os.utime(data, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert inventory._get_imported_names(str(data)) == {"os", "d"}


def test_global_arguments_equal_pyinfras_and_are_fresh_lists():
    pyinfra_speedups.install()
    first = arguments.all_global_arguments()
    assert first == arguments.all_global_arguments.original()
    first.clear()
    assert arguments.all_global_arguments() == arguments.all_global_arguments.original()


def test_operation_order_from_the_stack_is_unchanged(monkeypatch):
    pyinfra_speedups.install()
    state = SimpleNamespace(current_deploy_filename=__file__, current_op_file_number=3)

    def nested(depth):
        return nested(depth - 1) if depth else util.get_operation_order_from_stack(state)

    orders = []
    for original in (False, True):  # both from the same line: the same stack
        if original:
            monkeypatch.setattr(util, "stack", inspect.stack)
            monkeypatch.setattr(util, "getframeinfo", inspect.getframeinfo)
        orders.append(nested(4))
    assert orders[0] == orders[1] and len(orders[0]) >= 5


def test_nothing_is_patched_on_another_pyinfra(monkeypatch):
    assert pyinfra_speedups.applicable() is None  # the pinned 3.10
    assert pyinfra_speedups.applicable("3.11.0") == "pyinfra 3.11.0 is not 3.10.x"
    monkeypatch.setattr(pyinfra_speedups, "_INSTALLED", [])
    before = (inventory._get_imported_names, util.stack, util.getframeinfo, arguments.all_global_arguments)
    assert pyinfra_speedups.install("4.0.0") is False
    assert (inventory._get_imported_names, util.stack, util.getframeinfo, arguments.all_global_arguments) == before


def test_nothing_is_patched_when_an_attribute_is_gone(monkeypatch):
    monkeypatch.delattr(util, "getframeinfo")
    assert pyinfra_speedups.applicable() == "pyinfra.api.util.getframeinfo is gone"
    monkeypatch.setattr(pyinfra_speedups, "_INSTALLED", [])
    assert pyinfra_speedups.install() is False


def _users_lines(command: str) -> list[str]:
    import subprocess

    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout.splitlines()


def test_users_fact_command_prints_what_pyinfras_prints_on_this_machine():
    """Both commands on this machine's real /etc (CI: a stock Debian/Ubuntu): the same
    lines, so the same fact. The e2e hello module compares them on a test host with
    supplementary, duplicate-gid and nameless primary groups."""
    from pyinfra.facts.server import Users

    pyinfra_speedups.install()
    assert Users.command.fast
    original = Users.command.original(Users())
    fast = Users().command()
    assert fast == pyinfra_speedups.USERS_COMMAND != original
    assert _users_lines(fast) == _users_lines(original)
    assert "root" in Users().process(_users_lines(fast))


def test_users_command_kept_when_pyinfras_differs(monkeypatch):
    from pyinfra.facts.server import Users

    pyinfra_speedups.install()
    monkeypatch.setattr(Users, "command", lambda self: "for i in something-else; do :; done")
    assert not pyinfra_speedups._replace_users_command()
    assert Users().command() == "for i in something-else; do :; done"
