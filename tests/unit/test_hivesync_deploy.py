"""deploys/hivesync.py: rendered compose / nginx vhost / wrangler.toml, config and
secret checks, facts (container image, Alembic state, tables), the sample backend."""

import ast
import json
import os
import runpy
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deploys import hivesync, secrets
from deploys.parts import hivesync_config, hivesync_release, hivesync_stack, hivesync_workers, wrangler
from deploys.errors import ConfigError, SecretsMissing
from deploys.parts.nginx import render_site
from deploys.parts.preflight import memory_problems
from facts.hivesync import AlembicAtHead, ContainerImage, DatabaseSchema, missing_tables, parse_alembic, parse_schema

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests/apps/hivesync"
PLAN_TABLES = {"preview_jobs", "ai_doc_jobs", "worker_nodes", "worker_heartbeats", "audit_logs", "notifications",
               "tasks", "attachments", "teams", "projects", "users"}
# The plan's N.3 names, with the R2 ones as the app reads them (backend/app/config.py at
# c5680a2: R2_ACCESS_KEY, R2_SECRET_KEY, R2_PUBLIC_BASE_URL; R2_ENDPOINT derived).
PLAN_BACKEND_VARS = {"PORT", "BASE_URL", "JWT_SECRET", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER",
                     "POSTGRES_PASSWORD", "REDIS_HOST", "REDIS_PORT", "EMAIL_PROVIDER", "RESEND_API_KEY", "AI_PRIMARY",
                     "AI_MODEL", "OPENAI_API_KEY", "LOCAL_AI_ENABLED", "LOCAL_AI_MODEL_PATH", "PREVIEW_MAX_TIMEOUT_MS",
                     "LOG_LEVEL", "R2_ACCOUNT_ID", "R2_ACCESS_KEY", "R2_SECRET_KEY", "R2_BUCKET",
                     "R2_PUBLIC_BASE_URL", "WORKER_CALLBACK_SECRET"}
# config.py's secrets whose defaults are placeholders
APP_SECRETS = {"POSTGRES_PASSWORD", "JWT_SECRET", "API_TOKEN_PEPPER", "SESSION_SECRET", "DEVICE_TOKEN_SECRET",
               "WORKER_CALLBACK_SECRET", "PREVIEW_TOKEN_SECRET", "PREVIEW_DEVICE_CONTEXT_SECRET", "LZ_WEBHOOK_SECRET"}


class Data(dict):
    __getattr__ = dict.get


def data(**overrides):
    values = {}
    for group in ("all", "linode", "docker_host", "hivesync"):
        values.update({k: v for k, v in runpy.run_path(str(REPO / f"group_data/{group}.py")).items()
                       if not k.startswith("_")})
    values["hivesync_backend_image"] = "hivesync-backend:test"  # a ready image: no checkout to read
    values.update(overrides)
    return Data(values)


def test_defaults_are_valid():
    hivesync_config.check_config(data())


def test_every_variable_of_the_plan_is_data_a_secret_or_generated():
    d = data()
    names = (set(hivesync_stack.backend_env(d)) | set(d.required_secrets) | set(d.hivesync_generated_secrets)
             | set(d.hivesync_optional_secrets))
    assert PLAN_BACKEND_VARS <= names, PLAN_BACKEND_VARS - names
    assert hivesync_stack.backend_env(d)["BASE_URL"] == "https://hivesync.example.com"
    assert hivesync_stack.backend_env(d)["PORT"] == "4000"
    # every secret of the app's own is generated or required: none keeps its placeholder
    assert APP_SECRETS <= set(d.required_secrets) | set(d.hivesync_generated_secrets)


def test_r2_endpoint_is_derived_from_the_account_unless_set():
    assert hivesync_stack.r2_endpoint(data(), "abc") == "https://abc.r2.cloudflarestorage.com"
    assert hivesync_stack.r2_endpoint(data(hivesync_r2_endpoint="https://x.example"), "abc") == "https://x.example"


def test_the_linode_is_ubuntu_2204_with_2gb_and_the_plans_firewall():
    d = data()
    assert d.supported_os == {"ubuntu": ["22.04"]}
    assert d.hivesync_min_memory_mb == 1800  # MemTotal of a 2 GB Linode is ~1970 MiB
    assert d.firewall_allow_tcp == [22, 80, 443]
    # a 2 GB Linode reports ~1970 MiB total: it passes; available memory is checked against the stack's need
    assert memory_problems(1970, 1500, d.hivesync_min_memory_mb, d.hivesync_stack_memory_mb) == []
    assert memory_problems(990, 1500, 1800, 768) == ["only 990 MiB memory installed; the plan sizes this host at >= "
                                                     "1800 MiB"]
    assert memory_problems(1970, 500, 1800, 768) == ["only 500 MiB memory available; the stack needs about 768 MiB"]


def test_every_config_problem_is_reported_together():
    with pytest.raises(ConfigError) as err:
        hivesync_config.check_config(data(hivesync_bind_address="0.0.0.0", hivesync_backend_port=443,
                                   hivesync_backend_env={**data().hivesync_backend_env, "JWT_SECRET": "x"},
                                   firewall_allow_tcp=["ssh"], hivesync_domain="not a name"))
    text = str(err.value)
    for part in ("not a loopback address", "hivesync_backend_port = 443", "JWT_SECRET is a secret",
                 "'ssh' is not PORT", "not a DNS name"):
        assert part in text, part
    with pytest.raises(ConfigError, match="hivesync_role 'laptop' is not one of"):
        hivesync_config.check_config(data(hivesync_role="laptop"))


def test_missing_and_placeholder_secrets_are_named_in_one_message():
    values = {"RESEND_API_KEY": "REPLACE_ME", "OPENAI_API_KEY": "sk-real", "R2_ACCOUNT_ID": ""}
    with pytest.raises(SecretsMissing) as err:
        secrets.check_required({"hivesync": data().required_secrets}, values)
    text = str(err.value)
    for name in ("R2_ACCOUNT_ID", "R2_ACCESS_KEY", "R2_SECRET_KEY", "WORKER_CALLBACK_SECRET"):
        assert name in text
    assert "OPENAI_API_KEY" not in text and "RESEND_API_KEY" not in text  # optional: the app does not read them


def test_stack_publishes_on_loopback_only_with_volumes_and_healthchecks():
    doc = hivesync_stack.stack(data())
    assert list(doc["services"]) == ["backend", "postgres", "redis"]
    ports = [p for s in doc["services"].values() for p in s.get("ports", [])]
    assert ports == ["127.0.0.1:4000:4000", "127.0.0.1:5432:5432", "127.0.0.1:6379:6379"]
    assert doc["volumes"] == {"postgres-data": {"name": "hivesync_postgres_data"},
                              "redis-data": {"name": "hivesync_redis_data"}}
    assert all("healthcheck" in s for s in doc["services"].values())
    assert doc["services"]["backend"]["env_file"] == [".env.production"]
    assert doc["services"]["backend"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                        "redis": {"condition": "service_healthy"}}
    assert doc["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD}"
    unpublished = hivesync_stack.stack(data(hivesync_postgres_port=None, hivesync_redis_port=None))["services"]
    assert "ports" not in unpublished["postgres"] and "ports" not in unpublished["redis"]


def test_one_port_setting_drives_the_command_the_container_and_the_healthcheck():
    backend = hivesync_stack.stack(data(hivesync_backend_port=5000))["services"]["backend"]
    assert backend["ports"] == ["127.0.0.1:5000:5000"]
    assert backend["command"] == ["uvicorn", "backend.app.main:app", "--host", "0.0.0.0", "--port", "5000"]
    assert "http://127.0.0.1:5000/health" in backend["healthcheck"]["test"][1]
    assert hivesync_stack.backend_env(data(hivesync_backend_port=5000))["PORT"] == "5000"
    default = hivesync_stack.stack(data())["services"]["backend"]
    assert default["command"][-1] == "4000" and "http://127.0.0.1:4000/health" in default["healthcheck"]["test"][1]


def test_port_command_and_path_knobs_that_would_drift_are_refused():
    with pytest.raises(ConfigError) as err:
        hivesync_config.check_config(data(hivesync_backend_command=["uvicorn", "x:app", "--port", "4000"],
                                   hivesync_backend_env={**data().hivesync_backend_env, "PORT": 4000},
                                   hivesync_public_health_path="/health", hivesync_missing_tables="maybe",
                                   hivesync_migrations="flyway"))
    text = str(err.value)
    for part in ("must pass {port}", "PORT is set in one place, hivesync_backend_port", "is not under hivesync_api_prefix",
                 "hivesync_missing_tables 'maybe'", "hivesync_migrations 'flyway'"):
        assert part in text, part
    with pytest.raises(ConfigError, match="needs hivesync_backend_command"):
        hivesync_config.check_config(data(hivesync_backend_command=None, hivesync_backend_port=5000))
    hivesync_config.check_config(data(hivesync_backend_command=None))  # the image's CMD on 4000


def test_compose_v2_accepts_the_rendered_file(tmp_path):
    from tests.harness.image import _compose_v2_binary

    binary = tmp_path / "docker-compose"
    shutil.copy(_compose_v2_binary(), binary)
    binary.chmod(0o755)
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(hivesync_stack.render_compose(data()))
    (tmp_path / ".env.production").write_text("POSTGRES_PASSWORD=pw\nJWT_SECRET=x\n")
    out = subprocess.run([str(binary), "-p", "hivesync", "-f", str(compose), "--env-file",
                          str(tmp_path / ".env.production"), "config", "--format", "json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw"
    for service in config["services"].values():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1"


def test_nginx_vhost_publishes_api_without_prefix_and_websocket_only_and_denies_internal():
    site = render_site("hivesync", hivesync.vhosts(data()), "/var/www/acme", tls_names=["hivesync.example.com"])
    assert "return 301 https://hivesync.example.com$request_uri;" in site
    for path in ("= /internal", "/internal/"):
        assert "deny all;" in site.split(f"location {path} {{")[1].split("}")[0], path
    api = site.split("location /api/ {")[1].split("}")[0]
    # the trailing slash: nginx replaces /api/ with / (the backend serves at its root)
    assert "proxy_pass http://127.0.0.1:4000/;" in api and "proxy_set_header Upgrade $http_upgrade;" in api
    ws = site.split("location /ws/ {")[1].split("}")[0]
    assert "proxy_pass http://127.0.0.1:4000;" in ws
    https = site.split("listen 443")[1]
    assert "return 404;" in https.split("location / {")[1].split("}")[0]  # no /docs in public
    kept = render_site("hivesync", hivesync.vhosts(data(hivesync_strip_api_prefix=False)), "/var/www/acme",
                       tls_names=["hivesync.example.com"])
    assert "proxy_pass http://127.0.0.1:4000;" in kept.split("location /api/ {")[1].split("}")[0]
    bootstrap = render_site("hivesync", hivesync.vhosts(data()), "/var/www/acme", tls_names=[])
    assert "listen 443" not in bootstrap and "return 503;" in bootstrap


def test_wrangler_toml_has_both_envs_the_r2_binding_and_the_callback_url():
    text = hivesync_workers.render_wrangler_toml(data(hivesync_domain="api.hivesync.dev"), "preview_builder")
    config = tomllib.loads(text)
    assert config["name"] == "hivesync-preview-builder" and config["main"] == "src/index.js"
    assert set(config["env"]) == {"dev", "production"}
    prod = config["env"]["production"]
    assert prod["name"] == "hivesync-preview-builder-production"
    assert prod["r2_buckets"] == [{"binding": "R2", "bucket_name": "hivesync-r2"}]
    assert prod["vars"] == {"R2_BUCKET": "hivesync-r2", "AI_MODEL": "gpt-4.1",
                            "R2_PREFIXES": "previews/,ai-docs/,logs/workers/,tasks/attachments/",
                            "WORKER_CALLBACK_URL": "https://api.hivesync.dev/api/v1/workers/callback"}
    # no nginx in dev (`wrangler dev` -> the local backend): without the /api prefix nginx strips
    assert config["env"]["dev"]["vars"]["WORKER_CALLBACK_URL"] == "http://127.0.0.1:4000/v1/workers/callback"
    assert "WORKER_CALLBACK_SECRET" not in text.split("secret store")[1]  # only named in the header comment


def test_stand_in_wrangler_validates_the_rendered_toml(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.js").write_text("export default {}")
    (tmp_path / "wrangler.toml").write_text(hivesync_workers.render_wrangler_toml(data(), "ai_docs_processor"))
    log = tmp_path / "log.jsonl"
    env = {"WRANGLER_STANDIN_LOG": str(log), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, str(APPS / "wrangler"), "deploy", "--config", "wrangler.toml", "--env",
                          "production"], cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    (tmp_path / "wrangler.toml").write_text('name = "x"\nmain = "src/missing.js"\ncompatibility_date = "2024-01-01"\n')
    run = subprocess.run([sys.executable, str(APPS / "wrangler"), "deploy", "--config", "wrangler.toml", "--env",
                          "production"], cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert run.returncode == 1 and "does not exist" in run.stderr and "no [env.production]" in run.stderr


def test_worker_digest_follows_source_and_config(tmp_path):
    src = tmp_path / "index.js"
    src.write_text("a")
    first = wrangler.worker_digest("toml", [(src, "index.js")])
    assert first == wrangler.worker_digest("toml", [(src, "index.js")])
    assert first != wrangler.worker_digest("toml2", [(src, "index.js")])
    src.write_text("b")
    assert first != wrangler.worker_digest("toml", [(src, "index.js")])
    assert "secret" not in wrangler.secret_digest("w", "N", "secret", "app")
    assert wrangler.secret_digest("w", "N", "secret", "app") != wrangler.secret_digest("w", "N", "secret", "other")


def test_container_image_fact():
    fact = ContainerImage()
    assert fact.process(["running sha256:aaa hivesync-backend:1", "wanted sha256:bbb"]) == {
        "running_id": "sha256:aaa", "running_name": "hivesync-backend:1", "wanted_id": "sha256:bbb"}
    assert fact.process(["running ", "wanted "]) == ContainerImage.default()
    assert "docker inspect" in fact.command(container="hivesync-backend", image="img:1")


def test_alembic_state():
    assert parse_alembic(["0001_initial (head)", "--- heads ---", "0001_initial (head)"])["at_head"] is True
    behind = parse_alembic(["0001_initial", "--- heads ---", "0002_more (head)"])
    assert behind == {"current": ["0001_initial"], "heads": ["0002_more"], "at_head": False}
    assert parse_alembic(["--- heads ---", "0001_initial (head)"])["at_head"] is False  # empty database
    assert parse_alembic(["--- heads ---"])["at_head"] is False
    assert "alembic current" in AlembicAtHead().command(container="c", current=["alembic", "current"],
                                                         heads=["alembic", "heads"])


def test_schema_fact_and_missing_tables():
    assert parse_schema(["__hivesync_schema__", "alembic_ini no", "tables users teams"]) == {
        "alembic": False, "tables": ["teams", "users"]}
    assert parse_schema(["__hivesync_schema__", "alembic_ini yes", "tables ?"]) == {"alembic": True, "tables": None}
    assert parse_schema(["__hivesync_schema__", "tables "]) == {"alembic": None, "tables": []}
    command = DatabaseSchema().command(backend="b", postgres="p", user="u", db="d", alembic_ini="alembic.ini")
    assert "docker exec b test -f alembic.ini" in command and "pg_tables" in command
    assert missing_tables(sorted(PLAN_TABLES), ["users", "teams"])[:2] == ["ai_doc_jobs", "attachments"]


def test_sample_backend_is_upstreams_shape():
    """Root routes, /health {"ok": true}, create_all of upstream's 14 tables (6 of the
    plan's 11), no Alembic, uvicorn's command line."""
    text = (APPS / "backend/app.py").read_text()
    assert "c5680a2" in text and not (APPS / "backend/alembic.ini").exists()
    keys = {node.targets[0].id: {k.value for k in node.value.keys}
            for node in ast.parse(text).body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and isinstance(node.targets[0], ast.Name)}
    assert PLAN_TABLES & keys["TABLES"] == {"audit_logs", "notifications", "tasks", "teams", "projects", "users"}
    assert len(keys["TABLES"]) == 14 and keys["SECRET_DEFAULTS"] == APP_SECRETS
    dockerfile = (APPS / "Dockerfile.backend").read_text()
    assert 'CMD ["uvicorn", "backend.app.main:app", "--host", "0.0.0.0", "--port", "4000"]' in dockerfile


class StrictData(dict):
    """Like pyinfra's host data: a knob no group defines is an error, not None."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def test_workstation_config_needs_no_server_knobs():
    values = {}
    for group in ("all", "local", "hivesync"):
        values.update({k: v for k, v in runpy.run_path(str(REPO / f"group_data/{group}.py")).items()
                       if not k.startswith("_")})
    hivesync_config.check_config(StrictData({**values, "hivesync_role": "workstation"}))


def test_backup_records_what_a_rollback_needs_and_rollback_restores_only_when_the_database_changed(monkeypatch):
    monkeypatch.setattr(hivesync_release, "detected_cli", lambda: "docker compose")
    backup = hivesync_release.backup_command(data(), "20250101T000000", {"running_id": "sha256:a", "running_name": "img:1"})
    text = backup.get_raw_value()
    assert "pg_dump -U hivesync -d hivesync -Fc > /var/backups/hivesync/hivesync-20250101T000000.dump.tmp" in text
    assert text.index("pg_restore --list") < text.index("mv /var/backups")  # verified before it counts
    assert "SELECT version_num FROM alembic_version" in text and "/opt/hivesync/.previous-image" in text
    assert "information_schema.columns" in text  # the schema fingerprint: create_all has no revision
    assert "cp -p /opt/hivesync/.env.production /opt/hivesync/.env.production.previous" in text
    rollback = hivesync_release.rollback_command(data(), "why").get_raw_value()
    assert 'if [ "$now_state" != "$prev_state" ]' in rollback
    assert "cp -p /opt/hivesync/.env.production.previous /opt/hivesync/.env.production" in rollback
    assert rollback.index("docker stop hivesync-backend") < rollback.index("DROP SCHEMA public CASCADE") < rollback.index("up -d")
    # the dump is extracted in full before the DROP, and the restore is one transaction
    assert rollback.index('pg_restore -f - < "$dump" > "$sql" &&') < rollback.index("DROP SCHEMA")
    assert "psql -q -v ON_ERROR_STOP=1 --single-transaction" in rollback
    assert "BUT restoring $dump FAILED" in rollback
    # no half rollback: each step that can fail stops it with the reason
    assert rollback.count("Rollback impossible") == 3
    assert rollback.endswith("exit 1")


# --------------------------------------------------------------------------- R2 bucket list


def test_r2_bucket_list_parses_text_and_json_and_reports_failure():
    from facts.hivesync import parse_r2_bucket_list

    text = ["name:           hivesync-r2", "creation_date:  2026-01-01T00:00:00.000Z", "",
            "name:           other", "creation_date:  2026-01-02T00:00:00.000Z"]
    assert parse_r2_bucket_list(text) == ["hivesync-r2", "other"]
    assert parse_r2_bucket_list(['[{"name":"a","creation_date":"x"},{"name": "b"}]']) == ["a", "b"]
    assert parse_r2_bucket_list(["__r2_bucket_list__"]) == []  # an account without buckets
    assert parse_r2_bucket_list(["__r2_bucket_list_failed__ 1"]) is None  # not logged in: say so, create nothing
    assert parse_r2_bucket_list(["filename: name: trap"]) == []  # only whole `name:` lines count


def test_r2_bucket_fact_answers_for_an_empty_account_through_pyinfra(tmp_path):
    """Through pyinfra itself: an empty listing must be [] (not None, pyinfra's answer for
    no output), a failing wrangler None, and one bucket its name."""
    wrangler = Path(__file__).resolve().parents[1] / "apps" / "hivesync" / "wrangler"
    env = {**os.environ, "WRANGLER_STANDIN_LOG": str(tmp_path / "log.jsonl")}

    def fact(binary):
        out = subprocess.run([sys.executable, "-m", "pyinfra", "@local", "--json", "fact", "facts.hivesync.R2Buckets",
                              f"wrangler={binary}"], capture_output=True, text=True, env=env, timeout=120,
                             cwd=Path(__file__).resolve().parents[2])
        line = next(line for line in out.stdout.splitlines() if line.startswith("{"))
        return next(iter(json.loads(line).values()))["@local"]

    assert fact(wrangler) == []
    assert fact("/bin/false") is None
    subprocess.run([sys.executable, str(wrangler), "r2", "bucket", "create", "hivesync-r2"], env=env, check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    assert fact(wrangler) == ["hivesync-r2"]
