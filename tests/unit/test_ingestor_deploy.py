"""deploys/ingestor.py: data validation, the override of upstream's compose file, env files from
its templates, the release plan, source digests, the Alembic head, facts' parsing and the
host-side release script (the migration decision)."""

import json
import os
import runpy
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from pyinfra.api import HiddenValue

from deploys import ingestor, secrets
from deploys.errors import ConfigError, SecretsMissing
from facts.ingestor import (
    HomeAssistantApi,
    home_assistant_problem,
    image_sources_command,
    parse_docker_version,
    parse_image_sources,
    version_tuple,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "tests/apps/ingestor/source"
SCRIPT = REPO / "templates/opt/ha-ingestor/bin/ingestor-release"
VALUES = {"HOME_ASSISTANT_TOKEN": HiddenValue("ha-secret"), "INFLUXDB_TOKEN": HiddenValue("influx-secret"),
          "INFLUXDB_PASSWORD": HiddenValue("influx-password"), "WEATHER_API_KEY": HiddenValue("")}


class Data(dict):
    __getattr__ = dict.get


def data(**overrides):
    values = {k: v for k, v in runpy.run_path(str(REPO / "group_data/ingestor.py")).items() if not k.startswith("__")}
    values["ingestor_source"] = str(SAMPLE)
    values.update(overrides)
    return Data(values)


def services(**changes):
    found = data().ingestor_services
    for name, change in changes.items():
        found[name] = {**found[name], **change}
    return found


@pytest.fixture(scope="module")
def release_script():
    return runpy.run_path(str(SCRIPT))


# ----------------------------------------------------------------------------- data


def test_defaults_are_valid_and_carry_upstreams_numbers():
    d = data()
    ingestor.check_config(d)
    ports = {name: spec["port"] for name, spec in d.ingestor_services.items()}
    assert ports == {"influxdb": 8086, "websocket-ingestion": 8001, "enrichment-pipeline": 8002, "admin-api": 8003,
                     "data-api": 8006, "data-retention": 8080, "sports-data": 8005, "health-dashboard": 3000}
    assert d.ingestor_start_order[0] == ["influxdb"] and d.ingestor_start_order[-1] == ["health-dashboard"]
    assert d.ingestor_influxdb_bucket == "home_assistant_events"
    assert d.ingestor_expected_tables == ["alembic_version", "devices", "entities"]
    assert d.ingestor_docker_min_version == "20.10" and d.preflight_min_disk_mb == 2048
    assert d.ingestor_discovery_gate is False  # upstream stores discovery in InfluxDB at bbc4ab4
    assert not [k for k in d if callable(d[k])]  # helpers are deleted: pyinfra would load them as data


def test_every_problem_is_reported_together():
    bad = services(**{"admin-api": {"port": 70000}, "sports-data": {"port": 8001}})
    with pytest.raises(ConfigError) as err:
        ingestor.check_config(data(ingestor_bind_address="0.0.0.0", ingestor_services=bad,
                                   ingestor_start_order=[["influxdb"]], ingestor_compose_project="Bad Name",
                                   ingestor_memory_limits={"data-api": "lots"}))
    text = str(err.value)
    for part in ("0.0.0.0 is not a loopback address", "'admin-api'].port = 70000 is not a TCP port",
                 "ingestor_memory_limits['data-api'] = 'lots'", "ports are not unique",
                 "ingestor_start_order must name every service", "ingestor_compose_project 'Bad Name'"):
        assert part in text, part


def test_missing_secrets_are_named_in_one_message():
    with pytest.raises(SecretsMissing) as err:
        secrets.check_required({"ingestor": data().required_secrets}, {"INFLUXDB_TOKEN": "REPLACE_ME"})
    assert "ingestor: HOME_ASSISTANT_TOKEN, INFLUXDB_TOKEN, INFLUXDB_PASSWORD" in str(err.value)


def test_a_checkout_without_a_managed_service_is_refused(tmp_path):
    (tmp_path / "docker-compose.yml").write_text("services:\n  influxdb:\n    image: influxdb:2.7\n")
    with pytest.raises(ConfigError, match="has no service websocket-ingestion, enrichment-pipeline"):
        ingestor.theirs(data(ingestor_source=str(tmp_path)))


# ----------------------------------------------------------------------------- the override


def test_override_moves_every_published_port_to_loopback():
    d = data()
    _, outline = ingestor.theirs(d)
    text = ingestor.override(d, outline, ingestor.source_digests(d))
    assert '  carbon-intensity:\n    ports: !override\n      - "127.0.0.1:8010:8010"' in text  # unmanaged too
    assert '    ports: !override\n      - "127.0.0.1:8003:8004"' in text
    assert 'image: "ha-ingestor-data-api:latest"' in text and "influxdb:2.7" not in text
    assert "container_name" not in text and "env_file" not in text  # upstream's stay


def test_compose_v2_merges_theirs_and_ours(tmp_path):
    from tests.harness.image import _compose_v2_binary

    binary = tmp_path / "docker-compose"
    shutil.copy(_compose_v2_binary(), binary)
    binary.chmod(0o755)
    src = tmp_path / "src"
    shutil.copytree(SAMPLE, src)
    d = data(ingestor_source=str(src), ingestor_build_args={"X": "1"}, ingestor_memory_limits={"data-api": "300M"})
    for path, text in ingestor.env_files(d, VALUES).items():
        (src / path).write_text(text)
    (tmp_path / "compose.env").write_text(ingestor.compose_env(d, VALUES))
    text, outline = ingestor.theirs(d)
    (tmp_path / "ours.yml").write_text(ingestor.override(d, outline, ingestor.source_digests(d)))
    out = subprocess.run([str(binary), "-p", "ha-ingestor", "--project-directory", str(src), "-f",
                          str(src / "docker-compose.yml"), "-f", str(tmp_path / "ours.yml"), "--env-file",
                          str(tmp_path / "compose.env"), "config", "--format", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    for name, svc in config["services"].items():
        assert [p["host_ip"] for p in svc.get("ports", [])] == ["127.0.0.1"], name
    admin = config["services"]["admin-api"]
    assert admin["container_name"] == "ha-ingestor-admin" and admin["ports"][0]["published"] == "8003"
    api = config["services"]["data-api"]
    assert api["build"]["labels"]["ingestor.source"] == ingestor.source_digests(d)["data-api"]
    assert api["build"]["args"] == {"X": "1"} and api["deploy"]["resources"]["limits"]["memory"] == "314572800"
    assert api["volumes"][0]["source"] == "sqlite-data"
    assert config["services"]["sports-data"]["build"]["context"] == str(src / "services/sports-data")
    ws = config["services"]["websocket-ingestion"]["environment"]
    assert ws["HOME_ASSISTANT_TOKEN"] == "ha-secret" and ws["HA_TOKEN"] == "ha-secret"  # interpolation + env file
    assert ws["INFLUXDB_TOKEN"] == "influx-secret"


def test_env_files_come_from_upstreams_templates():
    files = ingestor.env_files(data(home_assistant_url="https://ha.example:8123"), VALUES)
    assert set(files) == {"infrastructure/.env.websocket", "infrastructure/.env.weather", "infrastructure/.env.influxdb"}
    ws = files["infrastructure/.env.websocket"]
    assert "HA_TOKEN=ha-secret" in ws and "HA_URL=wss://ha.example:8123/api/websocket" in ws
    assert "HA_RECONNECT_DELAY=5" in ws and "your_home_assistant_token_here" not in ws
    assert "ha-secret" not in files["infrastructure/.env.influxdb"]
    assert "INFLUXDB_BUCKET=home_assistant_events" in files["infrastructure/.env.influxdb"]
    with pytest.raises(ConfigError, match="HA_TOKEN still hold the template's placeholder"):
        ingestor.env_files(data(ingestor_env_files={"infrastructure/.env.websocket": {
            "template": "infrastructure/env.websocket.template", "values": {}}}), VALUES)
    with pytest.raises(ConfigError, match="HA_TOKEN holds characters"):  # named, never shown
        ingestor.env_files(data(), {**VALUES, "HOME_ASSISTANT_TOKEN": HiddenValue("a b$c")})
    assert "INFLUXDB_PASSWORD=influx-password" in ingestor.compose_env(data(), VALUES)


def test_release_plan_holds_health_checks_and_no_secrets():
    d = data()
    _, outline = ingestor.theirs(d)
    plan = ingestor.release_plan(d, ingestor.source_digests(d), "002", outline)
    text = json.dumps(plan)
    assert "secret" not in text and "password" not in text
    assert plan["services"]["data-api"]["health_url"] == "http://127.0.0.1:8006/health"
    assert plan["services"]["data-api"]["expect"]["dependencies.influxdb.status"] == "connected"
    assert plan["services"]["websocket-ingestion"]["expect"]["status"] == ["healthy", "degraded"]
    assert plan["services"]["influxdb"]["source_digest"] is None
    assert plan["unmanaged"] == ["carbon-intensity"]
    assert plan["migrate"]["db"] == {"volume": "ha-ingestor_sqlite-data", "file": "metadata.db"}
    assert plan["migrate"]["alembic_dir"] == "/opt/ha-ingestor/src/services/data-api"
    assert plan["compose_files"] == ["/opt/ha-ingestor/compose/docker-compose.yml",
                                     "/opt/ha-ingestor/compose/docker-compose.override.yml"]


def test_source_digest_changes_only_for_the_changed_service(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "src")
    d = data(ingestor_source=str(tmp_path / "src"))
    before = ingestor.source_digests(d)
    (tmp_path / "src/services/admin-api/src/main.py").write_text("# changed\n")
    (tmp_path / "src/services/data-api/__pycache__").mkdir()
    (tmp_path / "src/services/data-api/__pycache__/x.pyc").write_text("cache")
    after = ingestor.source_digests(d)
    assert [s for s in before if before[s] != after[s]] == ["admin-api"]
    (tmp_path / "src/shared/standin.py").write_text("# shared change\n")
    changed = ingestor.source_digests(d)
    assert [s for s in after if after[s] != changed[s]] == [
        "websocket-ingestion", "enrichment-pipeline", "admin-api", "data-api", "data-retention"]
    assert ingestor.source_digests(data(ingestor_source=str(tmp_path / "src"), ingestor_build_args={"A": "1"})) != changed


def test_source_revision_is_recorded_for_git_checkouts(tmp_path):
    assert ingestor.source_revision(tmp_path) is None
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-qm", "x"], check=True, env={**os.environ, **env})
    assert ingestor.source_revision(tmp_path)["dirty"] is False
    (tmp_path / "f").write_text("y")
    assert ingestor.source_revision(tmp_path)["dirty"] is True


def test_alembic_head_is_read_from_the_revisions(tmp_path):
    assert ingestor.alembic_head(SAMPLE / "services/data-api/alembic/versions") == "002"
    (tmp_path / "a.py").write_text('revision = "a"\ndown_revision = None\n')
    (tmp_path / "b.py").write_text("revision: str = 'b'\ndown_revision: str | None = 'a'\n")
    assert ingestor.alembic_head(tmp_path) == "b"
    (tmp_path / "c.py").write_text('revision = "c"\ndown_revision = "a"\n')
    with pytest.raises(ConfigError, match="several heads"):
        ingestor.alembic_head(tmp_path)


# ----------------------------------------------------------------------------- facts


def test_fact_parsing():
    assert parse_docker_version(["20.10.24+dfsg1"]) == "20.10.24"
    assert parse_docker_version([""]) is None
    assert version_tuple("20.10.24") < version_tuple("24") <= version_tuple("24.0.7")
    assert parse_image_sources(["a:latest|abc", "b:latest|-", "c:latest|<no value>"]) == {
        "a:latest": "abc", "b:latest": None, "c:latest": None}
    assert image_sources_command(["a:latest"]) == (
        "printf '%s|%s\\n' a:latest \"$(docker image inspect --format "
        "'{{index .Config.Labels \"ingestor.source\"}}' a:latest 2>/dev/null || echo -)\"")


def test_home_assistant_check_never_shows_the_token():
    command = HomeAssistantApi().command(url="http://ha:8123", token=HiddenValue("tok-123"))
    assert "tok-123" not in command.get_masked_value() and "tok-123" in command.get_raw_value()
    assert command.get_raw_value().startswith("INFRA_HA_TOKEN=tok-123 python3 -c ")  # env, not argv
    assert not command.get_raw_value().endswith("tok-123")
    probe = HomeAssistantApi().command(url="http://ha:8123", token=None).get_raw_value()
    assert probe.startswith("python3 -c ") and "INFRA_HA_TOKEN=" not in probe  # sudo: no token at all
    assert home_assistant_problem("http://ha:8123", {"status": 401}, token_sent=False) is None  # reachable
    assert "unreachable" in home_assistant_problem("http://ha:8123", {"error": "timeout"}, token_sent=False)
    assert home_assistant_problem("http://ha:8123", {"status": 200, "error": None}) is None
    assert "rejected HOME_ASSISTANT_TOKEN (HTTP 401)" in home_assistant_problem("http://ha:8123", {"status": 401})
    assert "unreachable" in home_assistant_problem("http://ha:8123", {"status": None, "error": "ConnectionRefusedError"})


# ----------------------------------------------------------------------------- release script


def test_release_script_reads_sqlite_state_and_json_fields(tmp_path, release_script):
    db = tmp_path / "metadata.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE alembic_version (version_num TEXT)")
    con.execute("INSERT INTO alembic_version VALUES ('002')")
    con.execute("CREATE TABLE devices (id TEXT)")
    con.commit()
    con.close()
    state = release_script["sqlite_state"](str(db), ["devices", "entities"])
    assert state == {"tables": ["alembic_version", "devices"], "counts": {"devices": 0}, "journal_mode": "wal",
                     "revision": "002", "integrity": "ok"}
    field = release_script["field"]
    assert field({"dependencies": {"sqlite": {"status": "healthy"}}}, "dependencies.sqlite.status") == "healthy"
    assert field({"status": "ok"}, "dependencies.sqlite") is None


def _db(path, statements):
    con = sqlite3.connect(path)
    for statement in statements:
        con.execute(statement)
    con.commit()
    con.close()


HEAD_TABLES = ["CREATE TABLE devices (device_id TEXT PRIMARY KEY, name TEXT)",
               "CREATE TABLE entities (entity_id TEXT PRIMARY KEY, device_id TEXT)"]


@pytest.mark.parametrize("case, statements, action", [
    ("fresh", [], "upgrade"),
    ("create_all", HEAD_TABLES, "stamp"),
    ("half-failed 002", [*HEAD_TABLES, "CREATE TABLE alembic_version (version_num TEXT)",
                         "INSERT INTO alembic_version VALUES ('001')"], "stamp"),
    ("older schema", ["CREATE TABLE devices (device_id TEXT PRIMARY KEY)"], "upgrade"),
])
def test_migration_upgrades_or_stamps_by_the_real_schema(tmp_path, case, statements, action):
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("ingestor_release_under_test", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)  # a module of its own: the fakes below replace its docker calls
    db = tmp_path / "metadata.db"
    if statements:
        _db(db, statements)
    calls = []

    def fake_alembic(plan, mount, *args):
        calls.append(args[0])
        creates = [] if args[0] == "stamp" else [s.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")
                                                 for s in HEAD_TABLES]
        _db(db, [*creates,
                 "CREATE TABLE IF NOT EXISTS alembic_version (version_num TEXT)", "DELETE FROM alembic_version",
                 "INSERT INTO alembic_version VALUES ('002')"])

    module.alembic = fake_alembic
    module.head_schema = lambda plan: {"devices": ["device_id", "name"], "entities": ["device_id", "entity_id"]}
    module.db_file = lambda db_spec: str(db) if db.exists() else None
    plan = {"migrate": {"service": "data-api", "head": "002", "db": {"volume": "v", "file": "metadata.db"}}}
    if case == "older schema":
        with pytest.raises(module.Failed, match="tables differing from head: \\['devices'\\]"):
            module.migrate(plan)  # the (faked) upgrade left devices short of a column: caught
    else:
        module.migrate(plan)
    assert calls == [action]


def test_release_script_keeps_only_the_newest_backups(tmp_path, release_script):
    for stamp in ("20250101-000000", "20250102-000000", "20250103-000000"):
        (tmp_path / f"ingestor-{stamp}").mkdir()
    (tmp_path / "someone-elses").mkdir()
    release_script["prune_backups"]({"backup_dir": str(tmp_path), "keep": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ingestor-20250102-000000", "ingestor-20250103-000000",
                                                          "someone-elses"]


def test_release_script_does_not_prune_or_delete_databases():
    text = SCRIPT.read_text()
    # no docker prune/down/volume rm as a command (argv items are quoted strings here)
    for word in ('"prune"', '"down"', '"system"', '"rm", "-f"', '"volume", "rm"'):
        assert word not in text, word


def test_sudo_from_inventory_or_command_line_means_no_token_is_sent():
    from types import SimpleNamespace

    from pyinfra.context import ctx_state

    assert ingestor.uses_sudo(data(_sudo=True))
    assert not ingestor.uses_sudo(data())  # outside a run: no state, no sudo
    for sudo in (True, False):
        with ctx_state.use(SimpleNamespace(config=SimpleNamespace(SUDO=sudo))):
            assert ingestor.uses_sudo(data()) is sudo
