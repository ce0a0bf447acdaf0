"""Every deploy that runs a long host-side step as a transient unit waits for an earlier,
cut-off run of it before it touches the files it reads, and never lets the Docker host
part restart dockerd under it (review of session 5, findings 1, 2 and 5)."""

from __future__ import annotations

import inspect

import pytest

from deploys import archon, hivesync, ingestor

CASES = [
    (archon.main, "MIGRATE_UNIT"),
    (ingestor.main, "RELEASE_UNIT"),
    (hivesync.server, "BUILD_UNIT"),
]


@pytest.mark.parametrize("entry, unit", CASES, ids=["archon", "ingestor", "hivesync"])
def test_docker_host_holds_its_restart_for_the_deploys_unit(entry, unit):
    source = inspect.getsource(entry)
    assert f"docker_host(hold_restart_for=({unit},))" in source


@pytest.mark.parametrize("entry, unit", [CASES[0], CASES[2]], ids=["archon", "hivesync"])
def test_an_unfinished_run_is_waited_for_before_the_docker_host_and_the_files(entry, unit):
    source = inspect.getsource(entry)
    assert f"wait_for_step(name=" in source and f"unit={unit})" in source
    assert source.index("wait_for_step(") < source.index("docker_host(")
