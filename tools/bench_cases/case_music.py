"""music on Debian 12, built as tests/e2e/test_music.py builds it (its fixtures)."""

import pytest

from tests.e2e import test_music as e2e
from tests.e2e.test_music import data, wheels  # noqa: F401  (fixtures)
from tests.harness.fixtures import module_host
from tools.bench_cases.measure import measure, record


@pytest.fixture(scope="module")
def music(request, test_cluster):
    host = module_host(request, test_cluster, "bench-music", groups=["music", "native_vm"], os="debian12")
    host.os_name = "debian12"
    for name in (e2e.MUSIC, e2e.OAUTH):
        test_cluster.set_record(name, host.address)
    return host


def test_music(music, data):  # noqa: F811
    record("music", measure("deploys/music.py", music.name, e2e.ENV, data()))
