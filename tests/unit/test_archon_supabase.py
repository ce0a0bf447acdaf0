"""deploys/archon.py against the real images: upstream Archon's SUPABASE_URL rule, the
Supabase image's admin user and key volume, Archon's schema after Supabase's init."""

import pytest

from deploys import archon
from deploys.errors import ConfigError
from facts.archon import parse_schema
from tests.unit.test_archon_deploy import data


@pytest.mark.parametrize("url, accepted", [
    ("http://kong:8000", False),              # the plan's: archon-server exits at start-up
    ("http://kong.localhost:8000", True),
    ("http://host.docker.internal:54321", True),
    ("http://10.1.2.3:8000", True),
    ("http://0.0.0.0:8000", False),
    ("http://8.8.8.8:8000", False),
    ("https://project.supabase.co", True),
    ("ftp://kong.localhost", False),
])
def test_supabase_url_rule_is_upstreams(url, accepted):
    assert (archon.archon_accepts_supabase_url(url) is None) is accepted


def test_the_plans_kong_url_is_refused_before_connecting():
    with pytest.raises(ConfigError, match="archon_supabase_url 'http://kong:8000'.*archon-server accepts plain http only"):
        archon.check_config(data(archon_supabase_url="http://kong:8000"))
    with pytest.raises(ConfigError, match="not in archon_network_subnet"):
        archon.check_config(data(archon_supabase_url="http://10.9.9.9:8000"))
    with pytest.raises(ConfigError, match="must be http://<name or IP>:8000"):
        archon.check_config(data(archon_supabase_url="http://kong.localhost:9000"))


def test_kong_gets_the_name_or_address_archon_uses():
    doc = archon.stack(data())["services"]
    assert doc["kong"]["networks"] == {"archon_production": {"aliases": ["kong.localhost"]}}
    for service in ("archon-server", "archon-mcp", "archon-agents"):
        assert doc[service]["environment"]["SUPABASE_URL"] == "http://kong.localhost:8000"
    fixed = archon.stack(data(archon_supabase_url="http://172.20.0.250:8000"))["services"]
    assert fixed["kong"]["networks"] == {"archon_production": {"ipv4_address": "172.20.0.250"}}
    archon.check_config(data(archon_supabase_url="http://172.20.0.250:8000"))


def test_postgres_runs_as_the_supabase_image_expects():
    pg = archon.stack(data())["services"]["postgres"]
    assert "POSTGRES_USER" not in pg["environment"]  # the image's own supabase_admin
    assert "postgres-config:/etc/postgresql-custom" in pg["volumes"]  # the pgsodium key
    assert not any(v.endswith(":/docker-entrypoint-initdb.d:ro") for v in pg["volumes"])  # init not hidden
    assert "./db/roles.sql:/docker-entrypoint-initdb.d/init-scripts/99-roles.sql:ro" in pg["volumes"]
    services = archon.stack(data())["services"]
    assert services["meta"]["environment"]["PG_META_DB_USER"] == "supabase_admin"
    assert "/opt/archon/migration:/app/migration:ro" in services["archon-server"]["volumes"]


def test_migrate_script_dumps_as_the_superuser_and_stops_on_any_restore_error():
    script = archon.render_migrate_script(data())
    assert "DB_ADMIN=supabase_admin" in script
    assert "pg_dumpall -h 127.0.0.1 -U \"$DB_ADMIN\"" in script
    assert "-U postgres" not in script and "-U \"$DB_USER\"" not in script
    assert "admin_psql \"$NEW_DB\" -1" in script and "ON_ERROR_STOP=1" in script
    assert "errors in restore.log" not in script  # errors are not counted and ignored
    assert 'PGPASSWORD="not-$POSTGRES_PASSWORD"' in script  # a wrong password must fail
    assert "SCHEMA_ARGS=(-n public)" in script


def test_cleanup_runs_after_nginx_and_the_external_checks():
    source = (archon.REPO / "deploys/archon.py").read_text()
    main = source[source.index("def main(data"):]
    assert main.index("https_site(") < main.index('phase="cleanup"')
    assert main.index('http_gate(f"https://{data.archon_public_name}/"') < main.index('phase="cleanup"')
    assert "cmd_cleanup\n}" not in archon.render_migrate_script(data()).split("cmd_migrate()")[1].split("cmd_cleanup()")[0]


def test_schema_fact_parsing():
    assert parse_schema(["schema t"]) == "present"
    assert parse_schema(["schema f"]) == "absent"
    assert parse_schema(["schema unknown"]) == "unknown"
    assert parse_schema([]) == "unknown"


# ----------------------------------------------------------------------------- keys carried over

import base64  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

CLI_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


def _jwt(secret, claims):
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    return signing + "." + b64(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())


def _env(tmp_path, mode, spec, check=True):
    return subprocess.run(["python3", "-c", archon.ENV_SCRIPT, mode, json.dumps(spec)],
                          capture_output=True, text=True, check=check)


def _values(path):
    return dict(line.split("=", 1) for line in Path(path).read_text().splitlines() if "=" in line and not line.startswith("#"))


def _carry_spec(tmp_path, old_env=None, user="OPENAI_API_KEY=sk-x\n"):
    d = data(archon_secrets_dir=str(tmp_path / "etc"), archon_dir=str(tmp_path / "opt"))
    spec = {**archon.env_spec(d), "carry": archon.carry_spec(d)}
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "opt").mkdir(exist_ok=True)
    (tmp_path / "etc" / "user.env").write_text(user)
    if old_env is not None:
        (tmp_path / "opt" / ".env").write_text(old_env)
    return spec


pytestmark_root = pytest.mark.skipif(os.geteuid() != 0, reason="the env script chowns to root")


@pytestmark_root
def test_the_old_service_key_and_its_jwt_secret_are_carried_over(tmp_path):
    old_key = _jwt(CLI_SECRET, {"role": "service_role", "iss": "supabase-demo"})
    spec = _carry_spec(tmp_path, f"SUPABASE_URL=http://host.docker.internal:54321\nSUPABASE_SERVICE_KEY={old_key}\n")
    status = json.loads(_env(tmp_path, "check", spec).stdout)
    assert status["carried"] == ["JWT_SECRET", "SUPABASE_SERVICE_KEY"] and not status["ok"]
    _env(tmp_path, "apply", spec)
    values = _values(spec["target"])
    assert values["SUPABASE_SERVICE_KEY"] == old_key and values["JWT_SECRET"] == CLI_SECRET
    header, payload, signature = values["SUPABASE_ANON_KEY"].split(".")  # a new anon key, same secret
    assert hmac.compare_digest(base64.urlsafe_b64decode(signature + "=="),
                               hmac.new(CLI_SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest())
    # after the migration the old file is gone (moved to the backup): the settled values stay
    (tmp_path / "opt" / ".env").unlink()
    assert json.loads(_env(tmp_path, "check", spec).stdout)["ok"] is True


@pytestmark_root
def test_a_key_signed_by_an_unknown_secret_stops_before_anything_is_written(tmp_path):
    spec = _carry_spec(tmp_path, "SUPABASE_SERVICE_KEY=" + _jwt("another-secret-of-the-operator-xxxxxxxx", {"role": "service_role"}) + "\n")
    status = json.loads(_env(tmp_path, "check", spec).stdout)
    assert "not signed by any known JWT secret: put the JWT_SECRET that signed it in .env" in status["error"]
    run = _env(tmp_path, "apply", spec, check=False)
    assert run.returncode == 1 and not Path(spec["generated"]).exists() and not Path(spec["target"]).exists()
    # the operator supplies the secret: carried key + supplied secret
    spec = _carry_spec(tmp_path, user="JWT_SECRET=another-secret-of-the-operator-xxxxxxxx\n")
    _env(tmp_path, "apply", spec)
    assert _values(spec["target"])["JWT_SECRET"] == "another-secret-of-the-operator-xxxxxxxx"


@pytestmark_root
def test_operators_supply_any_generated_name_once(tmp_path):
    spec = _carry_spec(tmp_path, user="POSTGRES_PASSWORD=chosen-by-the-operator\nARCHON_BOOTSTRAP_SECRET=\n")
    _env(tmp_path, "apply", spec)
    assert _values(spec["target"])["POSTGRES_PASSWORD"] == "chosen-by-the-operator"
    assert _values(spec["generated"])["POSTGRES_PASSWORD"] == "chosen-by-the-operator"
    assert len(_values(spec["target"])["ARCHON_BOOTSTRAP_SECRET"]) == 64  # empty: generated
    (tmp_path / "etc" / "user.env").write_text("POSTGRES_PASSWORD=changed-later\n")
    assert "does not rotate it" in json.loads(_env(tmp_path, "check", spec).stdout)["error"]


@pytestmark_root
def test_an_anon_key_as_service_key_is_refused(tmp_path):
    spec = _carry_spec(tmp_path, "SUPABASE_SERVICE_KEY=" + _jwt(CLI_SECRET, {"role": "anon"}) + "\n")
    assert "has role 'anon', not service_role" in json.loads(_env(tmp_path, "check", spec).stdout)["error"]


def test_subnet_overlap_with_docker_networks():
    from facts.archon import overlapping_networks, parse_network_subnets

    subnets = parse_network_subnets(["networks", "bridge 172.17.0.0/16 ", "supabase_network_archon 172.20.0.0/16 ",
                                     "archon_production 172.20.0.0/16", "host ", "v6 fd00::/64 10.1.0.0/24"])
    assert subnets["host"] == [] and subnets["v6"] == ["fd00::/64", "10.1.0.0/24"]
    assert overlapping_networks(subnets, "172.20.0.0/16", "archon_production") == ["supabase_network_archon (172.20.0.0/16)"]
    assert overlapping_networks(subnets, "172.20.128.0/24", "x") == ["archon_production (172.20.0.0/16)",
                                                                     "supabase_network_archon (172.20.0.0/16)"]
    assert overlapping_networks(subnets, "10.213.0.0/24", "archon_production") == []
    assert overlapping_networks(parse_network_subnets(["networks"]), "10.0.0.0/8", "a") == []


def test_archons_schema_runs_before_its_services_start():
    """archon-server's /health is 503 until its tables exist (upstream main.py
    _check_database_schema): the schema must be there before compose starts it."""
    import subprocess as sp

    from deploys.templating import render

    source = (archon.REPO / "deploys/archon.py").read_text()
    main = source[source.index("def main(data"):]
    assert main.index("archon_schema(") < main.index("compose_stack(")
    script = render("opt/archon/bin/archon-schema.sh.j2", dir="/opt/archon", cli="docker compose", project="p",
                    compose_file="f.yml", env_file=".env", container="archon-postgres", admin="supabase_admin",
                    db="postgres", sql="/opt/archon/migration/complete_setup.sql", restart="archon-server", timeout=60)
    sp.run(["bash", "-n", "-c", script], check=True)
    assert "up -d postgres" in script and "ON_ERROR_STOP=1 -1" in script


def _health_script(**overrides):
    from unittest import mock

    with mock.patch.object(archon, "host"):
        files = archon.health_files(data(**overrides))
    return files["/opt/archon/bin/archon-health-check"].getvalue()


def test_health_check_proves_studio_and_api_refusals_and_keeps_the_key_out_of_argv():
    import subprocess as sp

    plain = _health_script()
    assert "Kong basic-auth" not in plain and "without a key (want 401 or 403)" not in plain
    script = _health_script(archon_studio_public=True, archon_api_auth=True)
    sp.run(["bash", "-n", "-c", script], check=True)
    assert "https://supabase.archon.nexorithm.io/" in script and '"$code" = 401' in script
    assert "401|403) ok" in script
    assert '-H "@$header"' in script and "Bearer $api_key\"" not in script.replace("printf 'Authorization: Bearer %s", "")


def test_studio_is_closed_by_default_and_goes_through_kong_when_opened():
    assert [v["server_name"] for v in archon.vhosts(data())] == ["archon.nexorithm.io"]
    assert archon.public_names(data()) == ["archon.nexorithm.io"]
    opened = archon.vhosts(data(archon_studio_public=True))
    assert opened[1]["server_name"] == "supabase.archon.nexorithm.io" and opened[1]["upstream"] == "127.0.0.1:54321"
    kong = archon.render_kong(data())
    assert "basic-auth" in kong and "$DASHBOARD_PASSWORD" in kong and "url: http://studio:3000/" in kong
    env = archon.stack(data())["services"]["kong"]["environment"]
    assert env["DASHBOARD_PASSWORD"] == "${DASHBOARD_PASSWORD}" and "basic-auth" in env["KONG_PLUGINS"]
