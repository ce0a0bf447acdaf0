"""archon (Supabase + Archon stand-ins) fresh on a Docker host, as tests/e2e/test_archon.py."""

from tests.e2e import test_archon as e2e
from tests.e2e.test_archon import archon, images  # noqa: F401  (fixtures)
from tools.bench_cases.measure import measure, record


def test_archon(archon, images, test_cluster):  # noqa: F811
    for name in (e2e.ARCHON, e2e.STUDIO):
        test_cluster.set_record(name, archon.address)
    archon.write_file("/etc/archon/test-acme-root.pem", test_cluster.acme_root_file().read_text())
    record("archon", measure("deploys/archon.py", archon.name, e2e.ENV, e2e.archon_data(images)))
