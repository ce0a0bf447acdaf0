"""deploys/archon.py: the rendered stack, secrets/env script, migration script, config checks."""

import base64
import hashlib
import hmac
import json
import os
import re
import runpy
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from deploys import archon
from deploys.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose_v2():
    """The real compose v2 binary (downloaded once, sha256-checked, by the harness)."""
    from tests.harness.image import _compose_v2_binary

    return _compose_v2_binary()


class Data(dict):
    __getattr__ = dict.get


def data(**overrides):
    values = {k: v for k, v in runpy.run_path(str(REPO / "group_data/archon.py")).items() if not k.startswith("_")}
    values.update(overrides)
    return Data(values)


def test_defaults_are_valid():
    archon.check_config(data())


def test_every_problem_is_reported_together():
    with pytest.raises(ConfigError) as err:
        archon.check_config(data(archon_bind_address="0.0.0.0", archon_network_subnet="nope",
                                 archon_images={}, archon_compose_project="archon"))
    text = str(err.value)
    for part in ("not a loopback address", "not a network", "archon_images['kong']", "must differ"):
        assert part in text


def test_stack_has_the_plans_services_one_network_and_loopback_ports():
    doc = archon.stack(data())
    assert list(doc["services"]) == list(archon.SERVICES)
    assert list(doc["networks"]) == ["archon_production"]
    assert doc["networks"]["archon_production"]["ipam"]["config"] == [{"subnet": "172.20.0.0/16"}]
    assert doc["volumes"] == {"postgres-data": {"name": "archon_postgres_data"},
                              "postgres-config": {"name": "archon_postgres_config"}}
    published = [p for s in doc["services"].values() for p in s.get("ports", [])]
    assert sorted(published) == sorted([
        "127.0.0.1:54321:8000", "127.0.0.1:54322:5432", "127.0.0.1:54323:3000", "127.0.0.1:8181:8181",
        "127.0.0.1:8051:8051", "127.0.0.1:3737:3737", "127.0.0.1:8052:8052"])
    for name, service in doc["services"].items():
        assert list(service["networks"]) == ["archon_production"], name
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service["restart"] == "unless-stopped"
        for dep in service.get("depends_on", {}).values():
            assert dep == {"condition": "service_healthy"}
    assert doc["services"]["archon-agents"]["profiles"] == ["agents"]


def test_development_habits_are_gone():
    text = archon.render_compose(data())
    assert "--reload" not in text and "docker.sock" not in text and "build:" not in text
    for service in archon.stack(data())["services"].values():
        for volume in service.get("volumes", []):
            # (upstream's SQL files, read-only, for its migration tracking: no source code)
            assert not volume.startswith(("./python", "./archon-ui-main")), volume
    with_socket = archon.stack(data(archon_server_docker_socket=True))["services"]["archon-server"]
    assert with_socket["volumes"] == ["/opt/archon/migration:/app/migration:ro",
                                      "/var/run/docker.sock:/var/run/docker.sock:ro"]


def test_secrets_are_references_never_values():
    text = archon.render_compose(data())
    for name in ("POSTGRES_PASSWORD", "JWT_SECRET", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_KEY", "ARCHON_BOOTSTRAP_SECRET"):
        assert "${" + name + "}" in text
    assert "${OPENAI_API_KEY:-}" in text


def test_literal_dollars_are_escaped():
    doc = archon.stack(data(archon_service_env={"archon-server": {"X": "a$b"}}, archon_log_level="IN$FO"))
    assert doc["services"]["archon-server"]["environment"]["X"] == "a$$b"
    assert doc["services"]["archon-mcp"]["environment"]["LOG_LEVEL"] == "IN$$FO"


def test_healthcheck_timing_override_and_test_knobs():
    doc = archon.stack(data(archon_healthcheck_timing={"interval": "2s", "retries": 2},
                            archon_images={**data().archon_images, "kong": "standin:1"}))
    kong = doc["services"]["kong"]
    assert kong["image"] == "standin:1"
    assert kong["healthcheck"]["interval"] == "2s" and kong["healthcheck"]["retries"] == 2


def test_kong_is_recreated_when_its_config_changes(monkeypatch):
    before = archon.stack(data())["services"]["kong"]["labels"]
    monkeypatch.setattr(archon, "render_kong", lambda d: "changed")
    assert archon.stack(data())["services"]["kong"]["labels"] != before


def test_compose_v2_accepts_the_rendered_file(tmp_path, compose_v2):
    binary = tmp_path / "docker-compose"
    shutil.copy(compose_v2, binary)
    binary.chmod(0o755)
    (tmp_path / "kong").mkdir()
    (tmp_path / "docker-compose.production.yml").write_text(archon.render_compose(data()))
    env = {n: "x" for n in [*archon.GENERATED_RANDOM, *archon.GENERATED_JWT, "OPENAI_API_KEY"]}
    (tmp_path / ".env.production").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    out = subprocess.run([str(binary), "-p", "archon-production", "-f", str(tmp_path / "docker-compose.production.yml"),
                          "--env-file", str(tmp_path / ".env.production"), "--profile", "agents", "config",
                          "--format", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert len(config["services"]) == 9
    assert config["services"]["rest"]["environment"]["PGRST_DB_URI"] == "postgres://authenticator:x@postgres:5432/postgres"
    for service in config["services"].values():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1"


# ----------------------------------------------------------------------------- env script


def _run_env(tmp_path, mode, spec):
    return subprocess.run(["python3", "-c", archon.ENV_SCRIPT, mode, json.dumps(spec)],
                          capture_output=True, text=True, check=True).stdout


def _spec(tmp_path):
    spec = archon.env_spec(data(archon_secrets_dir=str(tmp_path / "etc"), archon_dir=str(tmp_path / "opt")))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "user.env").write_text("COMPOSE_PROJECT_NAME=archon-production\nOPENAI_API_KEY=sk-test\n")
    return spec


def _b64decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@pytest.mark.skipif(os.geteuid() != 0, reason="the env script chowns to root")
def test_env_script_generates_once_and_signs_the_supabase_keys(tmp_path):
    spec = _spec(tmp_path)
    assert json.loads(_run_env(tmp_path, "check", spec)) == {
        "ok": False, "missing": list(archon.GENERATED_RANDOM) + list(archon.GENERATED_JWT), "stale": True, "carried": []}
    out = _run_env(tmp_path, "apply", spec)
    values = dict(line.split("=", 1) for line in Path(spec["target"]).read_text().splitlines() if "=" in line and not line.startswith("#"))
    for name in (*archon.GENERATED_RANDOM, *archon.GENERATED_JWT):
        assert values[name] not in out  # names only on stdout
    assert len(values["JWT_SECRET"]) >= 32 and values["OPENAI_API_KEY"] == "sk-test"
    for name, role in archon.GENERATED_JWT.items():
        header, payload, signature = values[name].split(".")
        expected = hmac.new(values["JWT_SECRET"].encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        assert _b64decode(signature) == expected
        assert json.loads(_b64decode(header)) == {"alg": "HS256", "typ": "JWT"}
        claims = json.loads(_b64decode(payload))
        assert claims["role"] == role and claims["exp"] - claims["iat"] == 3650 * 86400
    for path in (spec["target"], spec["generated"]):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(_run_env(tmp_path, "check", spec))["ok"] is True
    before = Path(spec["generated"]).read_text()
    (tmp_path / "etc" / "user.env").write_text("OPENAI_API_KEY=sk-other\n")
    assert json.loads(_run_env(tmp_path, "check", spec)) == {"ok": False, "missing": [], "stale": True, "carried": []}
    _run_env(tmp_path, "apply", spec)
    assert Path(spec["generated"]).read_text() == before  # never regenerated
    assert "OPENAI_API_KEY=sk-other" in Path(spec["target"]).read_text()


# ----------------------------------------------------------------------------- migration script


def test_migrate_script_is_valid_bash_with_the_data_in_it():
    script = archon.render_migrate_script(data())
    subprocess.run(["bash", "-n", "-c", script], check=True)
    assert "OLD_NETWORKS=(supabase_network_supabase supabase_network_archon supabase_network_root archon_app-network)" in script
    assert "NEW_CONTAINERS=(archon-postgres archon-kong archon-rest archon-studio archon-meta archon-server archon-mcp archon-ui)" in script
    assert "PROFILE_ARGS=()" in script
    with_agents = archon.render_migrate_script(data(archon_agents_enabled=True))
    assert "PROFILE_ARGS=(--profile agents)" in with_agents and "archon-agents)" in with_agents


def test_row_count_query_lists_only_valid_schemas():
    sql = archon.count_sql(["public", "archon"])
    assert "table_schema IN ('public', 'archon')" in sql
    with pytest.raises(ConfigError, match="archon_verify_schemas"):
        archon.check_config(data(archon_verify_schemas=["public; drop"]))


def test_migrate_script_runs_nothing_without_arguments(tmp_path):
    path = tmp_path / "archon-migrate"
    path.write_text(archon.render_migrate_script(data()))
    out = subprocess.run(["bash", str(path)], capture_output=True, text=True, env={**os.environ, "COMPOSE": "docker compose"})
    assert out.returncode == 2 and "usage" in out.stderr
    assert re.search(r"^COMPOSE=\$\{COMPOSE:\?", path.read_text(), re.M)
