"""facts/archon.py: old-layout detection and what the migration does with it."""

import subprocess

import pytest

from facts.archon import ArchonOldLayout, migration_action, old_parts, parse_old_layout

OLD = [
    "container supabase_db_supabase running",
    "container supabase_kong_supabase exited",
    "network supabase_network_supabase",
    "network archon_app-network",
    "volume supabase_db_supabase",
    "rebind_unit",
]


def test_parse_old_layout():
    layout = parse_old_layout(OLD + ["", "garbage"])
    assert layout == {
        "containers": {"supabase_db_supabase": "running", "supabase_kong_supabase": "exited"},
        "networks": ["archon_app-network", "supabase_network_supabase"],
        "volumes": ["supabase_db_supabase"],
        "rebind_unit": True,
        "migrated": False,
    }
    assert old_parts(layout)[-1] == "rebind unit"


@pytest.mark.parametrize("lines,action", [
    ([], "none"),
    (["migrated"], "none"),
    (OLD, "migrate"),
    (OLD + ["migrated"], "cleanup"),
    (["network supabase_network_root"], "cleanup"),  # leftovers without data
    (["volume supabase_db_supabase", "network supabase_network_supabase"], "blocked"),
])
def test_migration_action(lines, action):
    got, why = migration_action(parse_old_layout(lines), "supabase_db_supabase", "supabase_db_supabase")
    assert got == action, why
    if action == "blocked":
        assert "supabase start" in why


def test_layout_command_filters_by_prefix_and_exact_network_names(tmp_path):
    """The fact's shell (run here with a fake `docker`) reports only the old parts."""
    fake = tmp_path / "docker"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  ps) printf "supabase_db_supabase running\\narchon-server running\\nsupabase_kong_supabase exited\\n" ;;\n'
        '  network) printf "bridge\\nsupabase_network_archon\\nsupabase_network_archonX\\narchon_production\\n" ;;\n'
        '  volume) printf "supabase_db_supabase\\narchon_postgres_data\\n" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    command = ArchonOldLayout().command("supabase_", ["supabase_network_archon", "supabase_network_root"],
                                        "supabase_", str(tmp_path / "none.service"), str(tmp_path / "marker"))
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert parse_old_layout(out.stdout.splitlines()) == {
        "containers": {"supabase_db_supabase": "running", "supabase_kong_supabase": "exited"},
        "networks": ["supabase_network_archon"],
        "volumes": ["supabase_db_supabase"],
        "rebind_unit": False,
        "migrated": False,
    }


def test_layout_command_fails_when_the_daemon_does_not_answer(tmp_path):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    command = ArchonOldLayout().command("supabase_", [], "supabase_", "/nonexistent", "/nonexistent")
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert out.returncode != 0
