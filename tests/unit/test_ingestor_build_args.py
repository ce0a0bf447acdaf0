"""The user's own `build:` section (deploys/parts/compose.build_sections) in ingestor's
rebuild key: a change to upstream's `build.args` in their docker-compose.yml rebuilds that
service, and the args resolve its FROM lines like compose's build does."""

import shutil

from deploys import ingestor
from deploys.parts.compose import build_args, build_sections
from tests.unit.test_ingestor_deploy import SAMPLE, data

COMPOSE = """\
name: demo
services:
  api:
    build:
      context: .
      dockerfile: services/api/Dockerfile   # a comment
      args:
        PY_VERSION: "3.12"
        - EXTRA=a=b
    container_name: demo-api
  web:
    build: ./web  # short form
    ports:
      - "80:80"
  db:
    image: postgres
volumes:
  build:
"""


def test_build_sections_and_args_from_a_block_style_compose_file():
    sections = build_sections(COMPOSE)
    assert sorted(sections) == ["api", "web"]
    assert sections["web"] == ["./web"]
    assert "container_name" not in "".join(sections["api"])
    assert build_args(sections["api"]) == {"PY_VERSION": "3.12", "EXTRA": "a=b"}
    assert build_args(sections["web"]) == {}
    list_form = ["context: .", "args:", "  - A=1", "  - 'B=two'", "target: prod"]
    assert build_args(list_form) == {"A": "1", "B": "two"}


def _with_args(compose: str, service: str, args: str) -> str:
    marker = f"dockerfile: services/{service}/Dockerfile\n"
    assert marker in compose
    return compose.replace(marker, marker + f"      args:\n        {args}\n", 1)


def test_a_change_to_upstreams_build_args_rebuilds_only_that_service(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "src")
    d = data(ingestor_source=str(tmp_path / "src"))
    compose = tmp_path / "src/docker-compose.yml"
    upstream = compose.read_text()
    before = ingestor.source_digests(d)
    compose.write_text(_with_args(upstream, "data-api", "LOG_LEVEL: debug"))
    first = ingestor.source_digests(d)
    assert [s for s in before if before[s] != first[s]] == ["data-api"]
    compose.write_text(_with_args(upstream, "data-api", "LOG_LEVEL: info"))
    second = ingestor.source_digests(d)
    assert [s for s in first if first[s] != second[s]] == ["data-api"]
    # ours wins over theirs for the same key, as compose merges the override's build.args
    d2 = data(ingestor_source=str(tmp_path / "src"), ingestor_build_args={"LOG_LEVEL": "info"})
    assert ingestor.service_build_args(d2, "data-api", ingestor.upstream_builds(d2)) == {"LOG_LEVEL": "info"}


def test_upstreams_build_args_resolve_the_from_lines(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "src")
    dockerfile = tmp_path / "src/services/data-api/Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("FROM python:3.11-alpine", "FROM python:${PY}-alpine"))
    compose = tmp_path / "src/docker-compose.yml"
    compose.write_text(_with_args(compose.read_text(), "data-api", "PY: '3.13'"))
    assert ingestor.service_bases(data(ingestor_source=str(tmp_path / "src")))["data-api"] == ["python:3.13-alpine"]
