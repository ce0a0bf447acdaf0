"""deploys/hivesync.py's local targets (the plan's N.2.2 local Docker): the stack is the
server's, on the operator's paths and BASE_URL; the knobs; the docker-access fact on
captured `docker version` output."""

import pytest

from deploys.parts import hivesync_config, hivesync_local, hivesync_stack, hivesync_workers, local_machine
from deploys.errors import ConfigError
from facts.hivesync import DockerServer, parse_docker_server
from tests.unit.test_hivesync_deploy import data


def local(**overrides):
    return data(hivesync_role="local_docker", **overrides)


def test_local_docker_runs_the_servers_stack_definition():
    """The same services, images, volumes, healthchecks, loopback ports and command: only
    where the files live differs (the compose file is byte-for-byte the server's)."""
    server, laptop = data(), hivesync_local.local_layout(local(), "/home/dev")
    assert hivesync_stack.stack(laptop) == hivesync_stack.stack(server)
    assert hivesync_stack.render_compose(laptop) == hivesync_stack.render_compose(server)
    assert laptop.hivesync_dir == "/home/dev/.local/share/hivesync"
    assert laptop.hivesync_secrets_dir == "/home/dev/.local/share/hivesync/secrets"
    spec = hivesync_stack.hivesync_env_spec(laptop)
    assert spec["target"] == "/home/dev/.local/share/hivesync/.env.production"
    assert spec["generated"] == "/home/dev/.local/share/hivesync/secrets/generated.env"
    assert spec["random"] == server.hivesync_generated_secrets


def test_local_base_url_is_the_loopback_backend_unless_set():
    assert hivesync_stack.backend_env(data())["BASE_URL"] == "https://hivesync.example.com"
    assert hivesync_stack.backend_env(local())["BASE_URL"] == "http://127.0.0.1:4000"
    assert hivesync_stack.backend_env(local(hivesync_backend_port=5000,
                                      hivesync_backend_command=["uvicorn", "x", "--port", "{port}"]))["BASE_URL"] \
        == "http://127.0.0.1:5000"
    assert hivesync_stack.backend_env(local(hivesync_local_base_url="http://localhost:8080"))["BASE_URL"] \
        == "http://localhost:8080"
    # the workers' production callback stays https://<domain> whatever runs locally
    prod = [e for e in hivesync_workers.worker_envs(local()) if e["name"] == "production"][0]
    assert prod["vars"]["WORKER_CALLBACK_URL"].startswith("https://hivesync.example.com/")


def test_local_knobs_are_checked():
    hivesync_config.check_config(local())
    with pytest.raises(ConfigError) as bad:
        hivesync_config.check_config(local(hivesync_local_action="restart", hivesync_local_base_url="ftp://x"))
    assert "hivesync_local_action 'restart' is not one of ('deploy', 'start', 'stop', 'status')" in str(bad.value)
    assert "hivesync_local_base_url 'ftp://x' is not an http(s) URL" in str(bad.value)
    with pytest.raises(ConfigError, match="hivesync_role 'laptop' is not one of"):
        hivesync_config.check_config(data(hivesync_role="laptop"))


def test_home_expansion():
    assert local_machine.expand_home("~/.local/share/hivesync", "/home/dev") == "/home/dev/.local/share/hivesync"
    assert local_machine.expand_home("hivesync", "/home/dev/") == "/home/dev/hivesync"
    assert local_machine.expand_home("/srv/hivesync/", "/home/dev") == "/srv/hivesync"
    assert local_machine.expand_home("~", "/home/dev") == "/home/dev"


# captured `docker version --format '{{.Server.Version}}' 2>&1` (Docker 20.10, Debian 12)
DENIED = ["--- docker server ---",
          "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: "
          "Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.24/version\": dial unix /var/run/docker.sock: connect: "
          "permission denied"]
DOWN = ["--- docker server ---", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?"]


def test_docker_server_fact_tells_ready_denied_down_and_missing():
    assert parse_docker_server(["--- docker server ---", "20.10.24+dfsg1"]) == {"ok": True, "version": "20.10.24+dfsg1"}
    denied = parse_docker_server(DENIED)
    assert not denied["ok"] and denied["error"].startswith("permission denied while trying to connect")
    assert parse_docker_server(DOWN) == {"ok": False, "error": DOWN[1]}
    assert parse_docker_server(["--- docker server ---", "sh: 1: docker: not found"]) == \
        {"ok": False, "error": "the docker command is not installed"}
    assert parse_docker_server([]) == {"ok": False, "error": "the docker command is not installed"}
    assert "docker version --format" in DockerServer().command()


# ----------------------------------------------------------------------------- N.2.1 local development


def dev(**overrides):
    return hivesync_local.dev_layout(data(hivesync_role="local_dev", **overrides), "/home/dev")


def test_dev_runs_postgres_and_redis_of_the_servers_stack_and_the_backend_from_the_checkout():
    d = dev(hivesync_dev_checkout="~/src/hivesync")
    server = hivesync_stack.stack(data())["services"]
    text = hivesync_stack.dev_compose(d)
    assert text.count('image: "') == 2 and "hivesync-backend" not in text.split("\n", 3)[-1]
    document = hivesync_stack.stack(d)
    assert {k: v for k, v in document["services"].items() if k != "backend"} == \
        {k: v for k, v in server.items() if k != "backend"}
    assert d.hivesync_dev_checkout == "/home/dev/src/hivesync"
    assert hivesync_local.dev_dir(d) == "/home/dev/.local/share/hivesync/dev"
    assert hivesync_stack.hivesync_env_spec(d)["target"] == "/home/dev/.local/share/hivesync/.env.dev"
    env = hivesync_local.dev_backend_env(d)
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["REDIS_HOST"], env["REDIS_PORT"]) == \
        ("127.0.0.1", 5432, "127.0.0.1", 6379)
    assert hivesync_stack.backend_env(d)["BASE_URL"] == "http://127.0.0.1:4000"


def test_dev_processes_backend_from_the_venv_and_one_wrangler_dev_per_worker():
    d = dev(hivesync_dev_checkout="/srv/my hivesync")
    backend, first, second = hivesync_local.dev_specs(d, "/home/dev/.local/share/hivesync/dev/venv", ["a_worker", "b"])
    assert backend.command == ("/home/dev/.local/share/hivesync/dev/venv/bin/uvicorn backend.app.main:app "
                               "--host 127.0.0.1 --port 4000 --reload")
    assert backend.cwd == "/srv/my hivesync" and backend.port == 4000
    assert backend.env_file == "/home/dev/.local/share/hivesync/.env.dev"
    assert backend.health_url == "http://127.0.0.1:4000/health"
    assert first.command == "wrangler dev --config wrangler.toml --env dev --ip 127.0.0.1 --port 8787"
    assert (first.port, second.port) == (8787, 8788)
    assert first.cwd == "/home/dev/.local/share/hivesync/dev/workers/a_worker"
    assert len({s.family for s in (backend, first, second)}) == 3


def test_dev_knobs_are_checked():
    hivesync_config.check_config(data(hivesync_role="local_dev"))
    with pytest.raises(ConfigError) as bad:
        hivesync_config.check_config(data(hivesync_role="local_dev", hivesync_redis_port=None,
                                   hivesync_dev_backend_cmd=["uvicorn", "--port", "4000"]))
    assert "hivesync_postgres_port and hivesync_redis_port must be published" in str(bad.value)
    assert "hivesync_dev_backend_cmd ['uvicorn', '--port', '4000'] must be a list of strings passing {port}" \
        in str(bad.value)
