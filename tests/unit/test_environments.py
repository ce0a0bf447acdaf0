import json

import pytest

from deploys import environments as envs
from deploys.errors import ConfigError


def test_default_environment_is_the_harmless_test_env():
    assert envs.selected_env({}) == "test"
    assert envs.selected_env({"DEPLOY_ENV": "prod"}) == "prod"


def test_unknown_environment_is_rejected_by_name():
    with pytest.raises(ConfigError, match="'production' is not one of"):
        envs.selected_env({"DEPLOY_ENV": "production"})


def test_prod_has_every_system_and_kind():
    hosts = envs.prod_hosts({})
    groups = {g for h in hosts for g in h.groups}
    assert {"music", "archon", "ingestor", "youtube", "hivesync"} <= groups
    assert {"native_vm", "docker_host", "linode", "local"} <= groups
    envs.validate(hosts)


def test_prod_host_addresses_come_from_environment():
    hosts = envs.prod_hosts({"MUSIC_HOST": "10.1.2.3", "MUSIC_SSH_USER": "ops"})
    music = next(h for h in hosts if "music" in h.groups)
    assert music.name == "10.1.2.3" and music.data["ssh_user"] == "ops"


def test_requested_systems_from_deploy_files_on_the_command_line():
    argv = ["pyinfra", "inventory.py", "deploys/music.py", "--dry"]
    assert envs.requested_systems(argv, {}) == ["music"]
    assert envs.requested_systems(["pyinfra", "inventory.py", "exec", "--", "uptime"], {}) == []
    assert envs.requested_systems(argv, {"INFRA_SYSTEMS": "archon, hello"}) == ["archon", "hello"]


def test_select_keeps_only_hosts_of_the_requested_systems():
    hosts = envs.prod_hosts({})
    chosen = envs.select(hosts, ["music"])
    assert [h.name for h in chosen] == ["dev.jasonhollis.com"]
    assert envs.select(hosts, []) == hosts


@pytest.mark.parametrize(
    "spec, message",
    [
        (envs.HostSpec("bad host!", ["music"]), "not a hostname"),
        (envs.HostSpec("h1", ["native_vm"]), "no system group"),
        (envs.HostSpec("h1", ["Music"]), "invalid group names"),
        (envs.HostSpec("h1", ["music"], {"ssh_port": 70000}), "not a TCP port"),
    ],
)
def test_malformed_inventory_is_one_clear_message(spec, message):
    with pytest.raises(ConfigError, match=message):
        envs.validate([spec])


def test_test_hosts_come_from_the_harness_inventory(tmp_path):
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps({
        "hosts": [{"name": "h1", "ssh_hostname": "127.0.0.1", "ssh_port": 2222, "ssh_user": "root",
                   "ssh_key": "/k", "address": "172.30.0.5", "groups": ["hello"], "data": {"x": 1}}],
        "dns": {"address": "172.30.0.2"},
        "acme": {"directory": "https://172.30.0.2:14000/dir", "ca_bundle": "/ca.pem"},
    }))
    [host] = envs.test_hosts({"INFRA_TEST_INVENTORY": str(path)})
    assert host.name == "h1" and host.groups == ["hello"]
    assert host.data["ssh_port"] == 2222 and host.data["x"] == 1
    assert host.data["acme_directory"] == "https://172.30.0.2:14000/dir"
    assert host.data["acme_ca_bundle"] == "/ca.pem"
    assert host.data["test_dns_server"] == "172.30.0.2"


def test_missing_harness_inventory_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match="make hosts-up"):
        envs.test_hosts({"INFRA_TEST_INVENTORY": str(tmp_path / "nope.json")})


def test_group_order_puts_environment_last_so_it_wins():
    hosts = [envs.HostSpec("h1", ["hello", "native_vm"], {})]
    order = list(envs.groups_in_precedence_order(hosts, "test"))
    assert order == ["native_vm", "hello", "test"]


def test_every_system_declares_its_secrets_as_a_list():
    for system in ["hello"]:
        assert isinstance(envs.required_secrets([system])[system], list)


def test_test_hosts_may_have_no_system_group():
    envs.validate([envs.HostSpec("h1", [])], require_system=False)
