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
