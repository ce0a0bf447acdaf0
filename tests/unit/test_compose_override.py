"""deploys/parts/compose.py: reading a user's compose file, the override we write for it."""


import pytest

from deploys.errors import ConfigError
from deploys.parts.compose import (
    Tagged, cli_args, compose_outline, loopback_ports, override_cli_problem, override_document, to_yaml,
)

UPSTREAM = """name: x
services:
  db:
    image: postgres  # comment
    ports:
      - "5432:5432"
      - '8080:80'
    environment:
      - A=1
  # commented:
  #   ports:
  web:
    build:
      context: .
    ports:
      - 127.0.0.1:3000:80
  worker:
    image: w
volumes:
  data:
"""


def test_outline_reads_services_and_their_ports():
    assert compose_outline(UPSTREAM) == {"db": {"ports": ["5432:5432", "8080:80"]},
                                         "web": {"ports": ["127.0.0.1:3000:80"]}, "worker": {"ports": []}}
    with pytest.raises(ConfigError, match="no services found"):
        compose_outline("version: '3'\n")


def test_loopback_ports_rebinds_every_form():
    assert loopback_ports(["8086:8086", "3000:80", "0.0.0.0:1:2", "80", "53:53/udp"], "127.0.0.1") == [
        "127.0.0.1:8086:8086", "127.0.0.1:3000:80", "127.0.0.1:1:2", "127.0.0.1::80", "127.0.0.1:53:53/udp"]


def test_override_ports_carry_compose_v2s_override_tag():
    doc = override_document({"db": {"ports": ["127.0.0.1:5432:5432"], "restart": "always"}})
    assert doc["services"]["db"]["ports"] == Tagged("!override", ["127.0.0.1:5432:5432"])
    assert to_yaml(doc) == ('services:\n  db:\n    ports: !override\n      - "127.0.0.1:5432:5432"\n'
                            '    restart: "always"\n')
    assert to_yaml({"a": Tagged("!reset", [])}) == "a: !reset []\n"


def test_only_compose_v2_with_override_can_move_ports():
    assert "compose v1" in override_cli_problem("docker-compose", None)
    assert "2.24.4" in override_cli_problem("docker compose", "2.20.2")
    assert override_cli_problem("docker compose", "2.40.3") is None


def test_cli_args_take_several_files_and_a_project_directory():
    args = cli_args("docker compose", "p", ["/a.yml", "/b.yml"], "/e.env", project_directory="/src")
    text = " ".join(a.obj if hasattr(a, "obj") else str(a) for a in args)
    assert text == "docker compose -p p --project-directory /src -f /a.yml -f /b.yml --env-file /e.env"
