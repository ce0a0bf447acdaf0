"""deploys/parts/compose.py: YAML writer, env files, CLI arguments (v1 and v2)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pyinfra.api import HiddenValue

from deploys.errors import ConfigError
from deploys.parts.compose import cli_args, env_file_text, to_yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose_v2():
    """The real compose v2 binary (downloaded once, sha256-checked, by the harness)."""
    from tests.harness.image import _compose_v2_binary

    return _compose_v2_binary()


def _text(args) -> str:
    from pyinfra.api import StringCommand

    return StringCommand(*args).get_raw_value()


def test_yaml_quotes_every_string_and_keeps_types():
    doc = {
        "services": {"web": {"image": "nginx:1.25", "ports": ["127.0.0.1:8080:80"], "restart": "no",
                             "environment": {"ON": "yes", "N": "010", "E": ""},
                             "healthcheck": {"test": ["CMD", "curl", "-f", "http://x"], "retries": 3},
                             "depends_on": {"db": {"condition": "service_healthy"}}, "labels": {}}},
        "volumes": {"data": {"name": "d"}},
    }
    text = to_yaml(doc, header="Managed by pyinfra\nsecond line")
    assert text.startswith("# Managed by pyinfra\n# second line\nservices:\n")
    assert '    restart: "no"' in text  # not the boolean false
    assert '      N: "010"' in text and '      E: ""' in text
    assert "      retries: 3" in text and "    labels: {}" in text
    assert '      - "127.0.0.1:8080:80"' in text


def test_yaml_is_read_back_identically_by_compose(tmp_path, compose_v2):
    doc = {"services": {"web": {"image": "x:1", "command": ["sh", "-c", 'echo "a b" $$HOME'],
                                "environment": {"A": "1", "B": "${SECRET}"}, "ports": ["127.0.0.1:81:80"]}}}
    binary = tmp_path / "docker-compose"
    shutil.copy(compose_v2, binary)
    binary.chmod(0o755)
    (tmp_path / "c.yml").write_text(to_yaml(doc))
    (tmp_path / "e.env").write_text(env_file_text({"SECRET": "s3cr.et-1"}))
    out = subprocess.run([str(binary), "-p", "t", "-f", str(tmp_path / "c.yml"), "--env-file",
                          str(tmp_path / "e.env"), "config", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    web = json.loads(out)["services"]["web"]
    assert web["command"] == ["sh", "-c", 'echo "a b" $$HOME']  # config keeps the escape
    assert web["environment"] == {"A": "1", "B": "s3cr.et-1"}
    assert web["ports"][0]["host_ip"] == "127.0.0.1"


def test_env_file_is_plain_key_value_and_rejects_ambiguous_values():
    assert env_file_text({"A": "x", "B": HiddenValue("sk-proj_1.2"), "C": None}, header="h") == "# h\nA=x\nB=sk-proj_1.2\nC=\n"
    for bad in ("has space", "quo'te", "dol$lar", "hash#", 'dq"'):
        with pytest.raises(ConfigError) as err:
            env_file_text({"K": HiddenValue(bad)})
        assert bad not in str(err.value)  # a secret is never echoed
    with pytest.raises(ConfigError, match="not a valid variable name"):
        env_file_text({"1X": "a"})


def test_cli_arguments_are_the_same_for_v1_and_v2():
    v2 = _text(cli_args("docker compose", "archon", "/opt/a/c.yml", "/opt/a/.env", ["agents"]))
    v1 = _text(cli_args("docker-compose", "archon", "/opt/a/c.yml", None))
    assert v2 == "docker compose -p archon -f /opt/a/c.yml --env-file /opt/a/.env --profile agents"
    assert v1 == "docker-compose -p archon -f /opt/a/c.yml"
    with pytest.raises(ConfigError):
        cli_args("podman-compose", "a", "/c.yml", None)


@pytest.mark.skipif(not shutil.which("sh"), reason="needs sh")
def test_staging_script_is_valid_shell():
    from deploys.parts.compose import stage_and_validate

    commands = list(stage_and_validate("docker-compose", "p", "/opt/p", "c.yml", "services: {}\n", None, None,
                                       (), "old-sha", None))
    script = commands[-1].get_raw_value()
    assert "config -q" in script and "mv -f /opt/p/c.yml.new /opt/p/c.yml" in script
    subprocess.run(["sh", "-n", "-c", script], check=True)
