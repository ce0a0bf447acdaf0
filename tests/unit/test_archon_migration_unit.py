"""deploys/archon.py: the migration as a transient unit; a cut-off run's result is kept."""

import subprocess

from deploys import archon


def _run(tmp_path, action, marker_exists):
    marker = tmp_path / ".migrated"
    if marker_exists:
        marker.write_text("/root/backups/archon-x\n")
    return subprocess.run(["sh", "-c", archon._SKIP_WHEN_MIGRATED, "archon-migrate", str(marker), action,
                           "echo", "ran", action], capture_output=True, text=True)


def test_a_migration_an_earlier_run_finished_is_not_run_again(tmp_path):
    done = _run(tmp_path, "migrate", marker_exists=True)
    assert done.returncode == 0 and done.stdout == "migrated by an earlier run (backups in /root/backups/archon-x)\n"


def test_otherwise_the_step_runs_as_asked(tmp_path):
    assert _run(tmp_path, "migrate", marker_exists=False).stdout == "ran migrate\n"
    assert _run(tmp_path, "cleanup", marker_exists=True).stdout == "ran cleanup\n"
