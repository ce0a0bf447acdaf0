"""hivesync server (backend + postgres + redis behind nginx/TLS), as tests/e2e/test_hivesync.py."""

from tests.e2e import test_hivesync as e2e
from tests.e2e.hivesync_common import checkout, images  # noqa: F401  (fixtures)
from tests.e2e.test_hivesync import data, server  # noqa: F401  (fixtures)
from tools.bench_cases.measure import measure, record


def test_hivesync(server, data):  # noqa: F811
    record("hivesync", measure("deploys/hivesync.py", server.name, e2e.SECRETS, data))
