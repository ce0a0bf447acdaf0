"""deploys/parts/docker_host.py: daemon.json and package choice."""

import json

import pytest

from deploys.errors import ConfigError
from deploys.parts import docker_host as part


def test_daemon_json_rotates_logs_and_keeps_containers_across_restarts():
    config = part.daemon_config("10m", 3, True, {"default-address-pools": [{"base": "10.99.0.0/16", "size": 24}]})
    text = part.render_daemon_json(config)
    assert json.loads(text) == {
        "default-address-pools": [{"base": "10.99.0.0/16", "size": 24}],
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-file": "3", "max-size": "10m"},
    }
    assert text == part.render_daemon_json(dict(reversed(list(config.items()))))  # stable


@pytest.mark.parametrize("size,count", [("10", 3), ("10mb", 3), ("1m", 0)])
def test_bad_rotation_values_are_refused(size, count):
    with pytest.raises(ConfigError):
        part.daemon_config(size, count, True)


def test_packages_per_source_and_distribution(monkeypatch):
    monkeypatch.setattr(part, "knob", lambda name: part.DEFAULTS[name])
    assert part.packages_for("distro", "debian") == ["docker.io", "docker-compose"]
    assert part.packages_for("distro", "ubuntu") == ["docker.io", "docker-compose-v2"]
    assert "docker-compose-plugin" in part.packages_for("docker", "ubuntu")
    with pytest.raises(ConfigError, match="no entry for 'alpine'"):
        part.packages_for("distro", "alpine")
    with pytest.raises(ConfigError, match="docker_package_source"):
        part.packages_for("snap", "ubuntu")


# ----------------------------------------------------------------------------- merge, restart or reload

from facts.docker_host import parse_daemon_json, parse_engine  # noqa: E402

OURS = part.daemon_config("10m", 3, True)


def test_merge_keeps_operator_keys_and_sets_ours():
    current = {"data-root": "/srv/docker", "log-driver": "json-file",
               "log-opts": {"max-size": "50m", "compress": "true"}, "registry-mirrors": ["https://m.test"]}
    merged = part.merge_daemon_config(current, OURS)
    assert merged == {"data-root": "/srv/docker", "registry-mirrors": ["https://m.test"], "log-driver": "json-file",
                      "log-opts": {"max-size": "10m", "max-file": "3", "compress": "true"}, "live-restore": True}
    assert part.changed_keys(current, merged) == {"log-opts", "live-restore"}
    assert part.daemon_action(part.changed_keys(current, merged)) == "restart"  # log-opts: not reloadable


def test_another_log_driver_drops_its_options():
    current = {"log-driver": "syslog", "log-opts": {"syslog-address": "udp://1.2.3.4:514"}}
    assert part.merge_daemon_config(current, OURS)["log-opts"] == {"max-size": "10m", "max-file": "3"}


def test_only_reloadable_changes_reload_and_nothing_changed_does_nothing():
    current = part.merge_daemon_config({"debug": True}, OURS)
    assert part.daemon_action(part.changed_keys(current, part.merge_daemon_config(current, OURS))) == "none"
    flipped = part.merge_daemon_config(current, part.daemon_config("10m", 3, False))
    assert part.changed_keys(current, flipped) == {"live-restore"}
    assert part.daemon_action({"live-restore"}) == "reload"
    assert part.daemon_action({"live-restore", "default-address-pools"}) == "restart"


def test_daemon_json_fact_tells_missing_empty_and_broken_apart():
    assert parse_daemon_json(["exists=no"]) == {"exists": False, "config": {}, "error": None}
    assert parse_daemon_json(["exists=yes"])["config"] == {}
    assert parse_daemon_json(["exists=yes", '{"debug": true}'])["config"] == {"debug": True}
    assert "not valid JSON" in parse_daemon_json(["exists=yes", '{"debug": tru'])["error"]
    assert parse_daemon_json(["exists=yes", "[1]"])["error"] == "not a JSON object"


def test_engine_fact_names_the_installed_package():
    assert parse_engine(["engine-fact", "package=docker-ce 5:27.3.1-1~debian.12~bookworm", "dockerd=yes",
                         "unit=yes"]) == {
        "package": "docker-ce", "version": "5:27.3.1-1~debian.12~bookworm", "dockerd": True, "installed": True,
        "unit": True}
    snap = parse_engine(["engine-fact", "dockerd=yes"])  # installed outside apt, no docker.service
    assert snap["installed"] is True and snap["unit"] is False
    assert parse_engine(["engine-fact"])["installed"] is False


def test_a_restart_waits_for_the_held_units():
    from pyinfra.api import StringCommand

    text = StringCommand(*part._wait_for_units(["archon-migrate"])).get_raw_value()
    assert "while systemctl is-active -q archon-migrate.service" in text and "sleep 5; done;" in text
    with pytest.raises(ConfigError):
        part._wait_for_units(["bad unit; rm -rf /"])


def test_a_restart_reloads_live_restore_first_and_puts_the_previous_file_back_on_failure():
    text = part.restart_dockerd("docker.service", ["archon-migrate"], live_restore=True).get_raw_value()
    assert text.index("archon-migrate.service") < text.index("systemctl reload docker.service")
    assert text.index("LiveRestoreEnabled") < text.index("systemctl restart docker.service ||")
    assert "cp -p /var/backups/infra-docker/daemon.json.previous /etc/docker/daemon.json" in text
    assert text.rstrip().endswith("false ; } ; fi")
    plain = part.restart_dockerd("docker.service").get_raw_value()
    assert "reload" not in plain and "LiveRestoreEnabled" not in plain


def test_the_operators_daemon_json_is_kept_before_it_is_rewritten():
    text = part.backup_daemon_json().get_raw_value()
    assert "install -d -m 700 /var/backups/infra-docker" in text
    assert "cp -p /etc/docker/daemon.json /var/backups/infra-docker/daemon.json.previous" in text


def test_the_restart_command_is_valid_shell(tmp_path):
    import subprocess
    text = part.restart_dockerd("docker.service", ["archon-migrate"], live_restore=True).get_raw_value()
    assert subprocess.run(["sh", "-n", "-c", text]).returncode == 0
    assert subprocess.run(["sh", "-n", "-c", part.backup_daemon_json().get_raw_value()]).returncode == 0
