"""Shared fixtures: the disposable-host cluster (session-scoped; boots once per run)."""

pytest_plugins = ["tests.harness.fixtures"]
