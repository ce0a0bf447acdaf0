"""deploys/pyinfra_speedups.py, the frame walk and the connectors: each equals pyinfra's own."""

from __future__ import annotations

import importlib
import inspect
from types import SimpleNamespace

import pyinfra
import pytest
from pyinfra.api import connectors, util

from deploys import pyinfra_speedups

operation = importlib.import_module("pyinfra.api.operation")  # the module: pyinfra.api.operation is the decorator
api_inventory = importlib.import_module("pyinfra.api.inventory")


@pytest.mark.parametrize("is_cli", [False, True])
@pytest.mark.parametrize("deploy_file", [True, False])
def test_operation_order_equals_pyinfras_inspect_walk(monkeypatch, is_cli, deploy_file):
    """The same line numbers as pyinfra's own walk with inspect (stack and getframeinfo
    unpatched), from a nested call that spans several lines."""
    pyinfra_speedups.install()
    monkeypatch.setattr(pyinfra, "is_cli", is_cli)
    monkeypatch.setattr(util, "stack", inspect.stack)
    monkeypatch.setattr(util, "getframeinfo", inspect.getframeinfo)
    state = SimpleNamespace(current_deploy_filename=__file__ if deploy_file else None, current_op_file_number=7)

    def nested(depth, order_of):
        if depth:
            return nested(
                depth - 1,
                order_of,
            )
        return order_of(state)

    fast, slow = [nested(3, order_of) for order_of in (operation.get_operation_order_from_stack,
                                                         util.get_operation_order_from_stack)]
    assert operation.get_operation_order_from_stack is pyinfra_speedups._operation_order_from_stack
    assert fast == slow and len(fast) >= 4


def test_connectors_are_read_once_and_equal_pyinfras():
    pyinfra_speedups.install()
    for patched in (connectors.get_all_connectors, connectors.get_execution_connectors):
        assert patched() == patched.original() and patched() is not patched()  # a fresh dict each time
    assert api_inventory.get_all_connectors is connectors.get_all_connectors
    assert api_inventory.get_execution_connectors is connectors.get_execution_connectors
    assert "ssh" in connectors.get_execution_connectors()
