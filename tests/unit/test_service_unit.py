import pytest
from pyinfra.api import HiddenValue

from deploys.errors import ConfigError
from deploys.parts.service import ServiceSpec, render_env_file, render_unit

BASE = {"name": "hello", "exec_start": "/usr/bin/python3 app.py", "user": "hello", "working_dir": "/opt/hello"}


def unit(**overrides):
    return render_unit(ServiceSpec.from_data({**BASE, **overrides})).read()


def test_unit_is_sandboxed_and_never_contains_secrets():
    spec = ServiceSpec.from_data(BASE, secrets={"TOKEN": HiddenValue("hunter2")})
    text = render_unit(spec).read()
    for directive in ["ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes",
                      "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service", "RestrictNamespaces=yes"]:
        assert directive in text
    assert "EnvironmentFile=/etc/hello/hello.env" in text
    assert "hunter2" not in text and "TOKEN" not in text


def test_state_dirs_are_the_only_writable_paths():
    text = unit(state_dirs=["/var/lib/hello"], read_write_paths=["/var/log/hello"])
    assert "ReadWritePaths=/var/lib/hello\nReadWritePaths=/var/log/hello\n" in text


def test_environment_values_are_quoted_for_systemd():
    text = unit(env={"MSG": 'say "hi" 100%'})
    assert 'Environment="MSG=say \\"hi\\" 100%%"' in text


def test_knobs_reach_the_unit():
    text = unit(restart="always", restart_sec=10, private_users=True, memory_deny_write_execute=False,
                capabilities=["CAP_NET_BIND_SERVICE"])
    assert "Restart=always\nRestartSec=10" in text and "PrivateUsers=yes" in text
    assert "MemoryDenyWriteExecute" not in text
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in text


def test_no_env_file_without_secrets():
    assert "EnvironmentFile" not in unit()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"exec_start": ""}, "'exec_start' is required"),
        ({"name": "bad name"}, "not a valid unit name"),
        ({"restart": "sometimes"}, "restart 'sometimes'"),
        ({"working_dir": "relative"}, "must be absolute"),
        ({"env": {"1BAD": "x"}}, "invalid environment variable names"),
        ({"colour": "red"}, "unknown keys"),
    ],
)
def test_bad_service_data_is_rejected_with_a_clear_message(data, message):
    with pytest.raises(ConfigError, match=message):
        ServiceSpec.from_data({**BASE, **data})


def test_env_file_escapes_what_systemd_would_interpret():
    text = render_env_file({"B": HiddenValue('a"b$c`d\\e'), "A": HiddenValue("plain")}).unmask()
    assert text == 'A="plain"\nB="a\\"b\\$c\\`d\\\\e"\n'


def test_env_file_rejects_multiline_secrets():
    with pytest.raises(ConfigError, match="newline"):
        render_env_file({"K": HiddenValue("a\nb")})
