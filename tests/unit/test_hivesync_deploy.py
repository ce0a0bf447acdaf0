"""deploys/hivesync.py: rendered compose / nginx vhost / wrangler.toml, config and
secret checks, facts (container image, Alembic state), the sample backend's HMAC rule."""

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
from deploys.errors import ConfigError, SecretsMissing
from deploys.parts.nginx import render_site
from facts.hivesync import AlembicAtHead, ContainerImage, parse_alembic

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests/apps/hivesync"
PLAN_TABLES = {"preview_jobs", "ai_doc_jobs", "worker_nodes", "worker_heartbeats", "audit_logs", "notifications",
               "tasks", "attachments", "teams", "projects", "users"}
PLAN_BACKEND_VARS = {"PORT", "BASE_URL", "JWT_SECRET", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER",
                     "POSTGRES_PASSWORD", "REDIS_HOST", "REDIS_PORT", "EMAIL_PROVIDER", "RESEND_API_KEY", "AI_PRIMARY",
                     "AI_MODEL", "OPENAI_API_KEY", "LOCAL_AI_ENABLED", "LOCAL_AI_MODEL_PATH", "PREVIEW_MAX_TIMEOUT_MS",
                     "LOG_LEVEL", "R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_BUCKET",
                     "R2_PUBLIC_URL", "WORKER_CALLBACK_SECRET"}


class Data(dict):
    __getattr__ = dict.get


def data(**overrides):
    values = {}
    for group in ("all", "linode", "docker_host", "hivesync"):
        values.update({k: v for k, v in runpy.run_path(str(REPO / f"group_data/{group}.py")).items()
                       if not k.startswith("_")})
    values.update(overrides)
    return Data(values)


def test_defaults_are_valid():
    hivesync.check_config(data())


def test_every_variable_of_the_plan_is_data_a_secret_or_generated():
    d = data()
    names = set(hivesync.backend_env(d)) | set(d.required_secrets) | set(d.hivesync_generated_secrets)
    assert PLAN_BACKEND_VARS <= names, PLAN_BACKEND_VARS - names
    assert hivesync.backend_env(d)["BASE_URL"] == "https://hivesync.example.com"
    assert set(d.hivesync_generated_secrets) == {"POSTGRES_PASSWORD", "JWT_SECRET"}


def test_the_linode_is_ubuntu_2204_with_2gb_and_the_plans_firewall():
    d = data()
    assert d.supported_os == {"ubuntu": ["22.04"]}
    assert d.hivesync_min_memory_mb == 2048
    assert d.firewall_allow_tcp == [22, 80, 443]
    assert hivesync.memory_problem(1500, 2048).startswith("only 1500 MiB")
    assert hivesync.memory_problem(4000, 2048) is None


def test_every_config_problem_is_reported_together():
    with pytest.raises(ConfigError) as err:
        hivesync.check_config(data(hivesync_bind_address="0.0.0.0", hivesync_backend_port=443,
                                   hivesync_backend_env={**data().hivesync_backend_env, "JWT_SECRET": "x"},
                                   firewall_allow_tcp=["ssh"], hivesync_domain="not a name"))
    text = str(err.value)
    for part in ("not a loopback address", "hivesync_backend_port = 443", "JWT_SECRET is a secret",
                 "'ssh' is not PORT", "not a DNS name"):
        assert part in text, part
    with pytest.raises(ConfigError, match="hivesync_role 'laptop' is not one of"):
        hivesync.check_config(data(hivesync_role="laptop"))


def test_missing_and_placeholder_secrets_are_named_in_one_message():
    values = {"RESEND_API_KEY": "REPLACE_ME", "OPENAI_API_KEY": "sk-real", "R2_ACCOUNT_ID": ""}
    with pytest.raises(SecretsMissing) as err:
        secrets.check_required({"hivesync": data().required_secrets}, values)
    text = str(err.value)
    for name in ("RESEND_API_KEY", "R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "WORKER_CALLBACK_SECRET"):
        assert name in text
    assert "OPENAI_API_KEY" not in text


def test_stack_publishes_on_loopback_only_with_volumes_and_healthchecks():
    doc = hivesync.stack(data())
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
    unpublished = hivesync.stack(data(hivesync_postgres_port=None, hivesync_redis_port=None))["services"]
    assert "ports" not in unpublished["postgres"] and "ports" not in unpublished["redis"]


def test_compose_v2_accepts_the_rendered_file(tmp_path):
    from tests.harness.image import _compose_v2_binary

    binary = tmp_path / "docker-compose"
    shutil.copy(_compose_v2_binary(), binary)
    binary.chmod(0o755)
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(hivesync.render_compose(data()))
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


def test_nginx_vhost_redirects_proxies_api_and_websocket_and_denies_internal():
    site = render_site("hivesync", hivesync.vhosts(data()), "/var/www/acme", tls_names=["hivesync.example.com"])
    assert "return 301 https://hivesync.example.com$request_uri;" in site
    internal = site.split("location /internal/ {")[1].split("}")[0]
    assert "deny all;" in internal
    api = site.split("location /api/ {")[1].split("}")[0]
    assert "proxy_pass http://127.0.0.1:4000;" in api and "proxy_set_header Upgrade $http_upgrade;" in api
    assert "location /ws/ {" in site
    bootstrap = render_site("hivesync", hivesync.vhosts(data()), "/var/www/acme", tls_names=[])
    assert "listen 443" not in bootstrap and "return 503;" in bootstrap


def test_wrangler_toml_has_both_envs_the_r2_binding_and_the_callback_url():
    text = hivesync.render_wrangler_toml(data(hivesync_domain="api.hivesync.dev"), "preview_builder")
    config = tomllib.loads(text)
    assert config["name"] == "hivesync-preview-builder" and config["main"] == "src/index.js"
    assert set(config["env"]) == {"dev", "production"}
    prod = config["env"]["production"]
    assert prod["name"] == "hivesync-preview-builder-production"
    assert prod["r2_buckets"] == [{"binding": "R2", "bucket_name": "hivesync-r2"}]
    assert prod["vars"] == {"R2_BUCKET": "hivesync-r2", "AI_MODEL": "gpt-4.1",
                            "R2_PREFIXES": "previews/,ai-docs/,logs/workers/,tasks/attachments/",
                            "WORKER_CALLBACK_URL": "https://api.hivesync.dev/api/v1/workers/callback"}
    assert config["env"]["dev"]["vars"]["WORKER_CALLBACK_URL"] == "http://127.0.0.1:4000/api/v1/workers/callback"
    assert "WORKER_CALLBACK_SECRET" not in text.split("secret store")[1]  # only named in the header comment


def test_stand_in_wrangler_validates_the_rendered_toml(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.js").write_text("export default {}")
    (tmp_path / "wrangler.toml").write_text(hivesync.render_wrangler_toml(data(), "ai_docs_processor"))
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
    first = hivesync.worker_digest("toml", [(src, "index.js")])
    assert first == hivesync.worker_digest("toml", [(src, "index.js")])
    assert first != hivesync.worker_digest("toml2", [(src, "index.js")])
    src.write_text("b")
    assert first != hivesync.worker_digest("toml", [(src, "index.js")])
    assert "secret" not in hivesync.secret_digest("w", "N", "secret")


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


def test_initial_migration_creates_every_table_of_the_plan():
    text = (APPS / "backend/alembic/versions/0001_initial.py").read_text()
    created = {line.split('"')[1] for line in text.splitlines() if "op.create_table(" in line}
    assert created == PLAN_TABLES


def test_sample_backend_hmac_rule():
    import hashlib
    import hmac

    sys.path.insert(0, str(APPS / "backend"))
    try:
        from callbacks import verify_callback
    finally:
        sys.path.remove(str(APPS / "backend"))
    body, now = b'{"id": 1}', 1_700_000_000
    good = hmac.new(b"s3cret", f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert verify_callback("s3cret", str(now), good, body, now + 10) is None
    assert verify_callback("s3cret", str(now), good, body, now + 301) == "stale timestamp"
    assert verify_callback("other", str(now), good, body, now) == "bad signature"
    assert verify_callback("s3cret", "x", good, body, now) == "missing or malformed timestamp"


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
    hivesync.check_config(StrictData({**values, "hivesync_role": "workstation"}))


def test_backup_records_what_a_rollback_needs_and_rollback_restores_only_after_a_migration(monkeypatch):
    monkeypatch.setattr(hivesync, "detected_cli", lambda: "docker compose")
    backup = hivesync.backup_command(data(), "20250101T000000", {"running_id": "sha256:a", "running_name": "img:1"})
    text = backup.get_raw_value()
    assert "pg_dump -U hivesync -d hivesync -Fc > /var/backups/hivesync/hivesync-20250101T000000.dump.tmp" in text
    assert text.index("pg_restore --list") < text.index("mv /var/backups")  # verified before it counts
    assert "SELECT version_num FROM alembic_version" in text and "/opt/hivesync/.previous-image" in text
    rollback = hivesync.rollback_command(data(), "why").get_raw_value()
    assert 'if [ "${now_rev:--}" != "$prev_rev" ]' in rollback
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
