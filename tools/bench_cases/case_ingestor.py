"""ingestor (compose stack + HA stand-in), as tests/e2e/test_ingestor.py."""

from tests.e2e import test_ingestor as e2e
from tests.e2e.test_ingestor import host, images, source  # noqa: F401  (fixtures)
from tools.bench_cases.measure import measure, record


def test_ingestor(host, images, source):  # noqa: F811
    record("ingestor", measure("deploys/ingestor.py", host.name, e2e.ENV, e2e.ingestor_data(images, source)))
