"""tools/demo.py: change count and phase timings from pyinfra's output, state files, roles.

The demo itself runs in CI (.ci/run: `make demo` twice, the second with 0 changes).
"""

from __future__ import annotations

import os
import stat

from tests.harness.image import debootstrap_step
from tools import demo

# Captured from `make demo DEMO=hello` (pyinfra 3.10): a first run and a re-run.
FIRST = """\
    Operation                                                                          Hosts   Success   Error   No Change   
    Application code                                                                   1       1         -       -           
    Health gate | Wait until http://127.0.0.1:8080/health is healthy                   1       -         -       1           
    Grand total                                                                        11      10        -       1           
"""
AGAIN = """\
    Grand total                                                                        11      -         -       11          
"""


def test_changes_reads_the_grand_total_success_column():
    assert demo.changes(FIRST) == 10
    assert demo.changes(AGAIN) == 0
    assert demo.changes("\x1b[1m    Grand total   45   38   -   7\x1b[0m") == 38


def test_changes_is_unknown_without_a_results_table():
    assert demo.changes("--> An internal exception occurred") is None


def test_phases_time_each_deploy_part_and_pyinfra_stage(capsys):
    phases = demo.Phases()
    for line in ["--> Loading config...", "--> Connecting to hosts...", "--> Preparing operation files...",
                 "--> Beginning operation run...", "--> Starting operation: Application code ",
                 "--> Starting operation: Hardened systemd service | Group hello ",
                 "    [hello-demo] Success",
                 "--> Starting operation: Hardened systemd service | User hello ",
                 "--> Starting operation: Health gate | Wait until ... ", "--> Results:"]:
        phases.feed(line)
    phases.finish()
    assert [name for name, _ in phases.done] == [
        "connect", "prepare (facts, change detection)", "Application code", "Hardened systemd service",
        "Health gate"]
    assert "[demo] Hardened systemd service: " in capsys.readouterr().out


def test_secrets_file_is_0600_and_keeps_its_values(tmp_path):
    path = demo.secrets_file(tmp_path, ["A_SECRET"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = path.read_text()
    assert first.startswith("A_SECRET=") and len(first.strip()) > 30
    demo.secrets_file(tmp_path, ["A_SECRET", "B_SECRET"])
    text = path.read_text()
    assert text.startswith(first) and text.count("B_SECRET=") == 1  # old kept, new added once


def test_demo_host_is_the_kind_of_machine_the_system_runs_on():
    assert demo.production_role("music") == (["native_vm", "music"], {})
    assert demo.production_role("archon")[0] == ["docker_host", "archon"]
    groups, data = demo.production_role("hivesync")
    assert groups == ["linode", "docker_host", "hivesync"] and data == {"hivesync_role": "server"}
    assert demo.production_role("hello") == (["native_vm", "hello"], {})


def test_again_command_is_the_plain_pyinfra_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = tmp_path / ".hosts" / "demo"
    cmd = demo.again_command("music", "music-demo", state, state / "secrets.env")
    assert cmd.startswith("INFRA_HOSTS_DIR=.hosts/demo INFRA_ENV_FILE=.hosts/demo/secrets.env ")
    assert cmd.endswith("-m pyinfra inventory.py deploys/music.py --limit music-demo -y")


def test_unknown_system_is_one_line(capsys):
    assert demo.main(["nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("demo: unknown system 'nope'; choose one of ") and "music" in err


def test_debootstrap_stages():
    assert debootstrap_step("I: Retrieving libc6 2.36-9") == "Retrieving"
    assert debootstrap_step("I: Base system installed successfully.") == "Base"
    assert debootstrap_step("W: something") is None


def test_every_system_has_a_demo_and_its_e2e_hooks_exist():
    """The docker-host demos call into their e2e modules: a rename there must fail here."""
    import importlib

    assert set(demo.DEMOS) == set(demo.known_systems())
    hooks = {"tests.e2e.test_archon": ["archon_data"], "tests.e2e.test_hivesync": ["server_data"],
             "tests.e2e.test_ingestor": ["ingestor_data"], "tests.e2e.test_youtube": ["prepare", "DATA"],
             "tests.apps.archon.build": ["ensure_standin_images"], "tests.apps.hivesync.build": ["ensure_images"],
             "tests.apps.ingestor.build": ["ensure_standin_images", "HA_STANDIN", "SOURCE"]}
    for module, names in hooks.items():
        loaded = importlib.import_module(module)
        assert [n for n in names if not hasattr(loaded, n)] == [], module


def test_hivesync_demo_data_builds_and_its_host_os_is_supported(tmp_path, monkeypatch):
    """The demo calls the e2e data builder itself (a changed signature or OS fails here)."""
    from types import SimpleNamespace

    import tests.apps.hivesync.build as hivesync_build

    monkeypatch.setattr(hivesync_build, "ensure_images", lambda: {"backend": "b:1", "postgres": "p:1", "redis": "r:1"})
    pem = tmp_path / "root.pem"
    pem.write_text("pem")
    ctx = SimpleNamespace(state=tmp_path, host=SimpleNamespace(address="10.0.0.9"),
                          cluster=SimpleNamespace(acme_root_file=lambda: pem), load_images=lambda tags: None)
    data = demo.hivesync_data(ctx)
    assert data["hivesync_domain"] == "hivesync.demo.test"
    assert (tmp_path / "hivesync" / ".git").is_dir() and data["hivesync_backend_source"] == str(tmp_path / "hivesync")
    version = demo.DEMOS["hivesync"].os.removeprefix("debian")
    assert version in data["supported_os"]["debian"]
