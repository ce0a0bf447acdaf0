import json

from tools.drift import parse_plan, pending_changes


def test_pending_changes_lists_only_operations_that_would_change():
    plan = [
        {"name": "Unit", "hosts_with_change": ["h1"], "hosts_with_conditional_change": []},
        {"name": "Restart", "hosts_with_change": [], "hosts_with_conditional_change": ["h1"]},
        {"name": "Running", "hosts_with_change": [], "hosts_with_conditional_change": []},
    ]
    assert pending_changes(plan) == [("Unit", ["h1"])]


def test_plan_is_found_after_other_output():
    stdout = "some log line\n" + json.dumps({"plan": [{"name": "x", "hosts_with_change": []}], "results": None})
    assert parse_plan(stdout) == [{"name": "x", "hosts_with_change": []}]
