"""facts.compose: CLI detection and label-based service states.

The compose_services_*_docker20.txt fixtures are REAL output of the fact's command against
Docker Engine 20.10.24 (Debian 12 docker.io), for containers created with `docker run
--label com.docker.compose.project=... --label com.docker.compose.service=... --label
com.docker.compose.oneoff=...` named the way Compose v2 (factcapture-web-1) and v1
(factcapturev1_web_1) name them: no compose binary was available on the capture machine, and
the fact reads only those labels, which both Compose versions set. Lines written by hand
below are marked as such. The shell plumbing is tested with a fake `docker` on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from facts.compose import (
    INSPECT_FORMAT,
    PLUGIN_DIRS,
    ComposeCli,
    ComposeServices,
    build_services_command,
    compose_cli_command,
    parse_inspect_line,
    parse_services,
    unhealthy_services,
)

FIXTURES = Path(__file__).parent / "fixtures" / "facts"
SH = shutil.which("sh")


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


# --- parsing captured output --------------------------------------------------------------


def test_v2_named_project():
    assert ComposeServices().process(lines("compose_services_v2_labels_docker20.txt")) == {
        "cache": {"state": "running", "health": "starting", "container": "factcapture-cache-1",
                  "exit_code": 0, "replicas": 1},
        "db": {"state": "running", "health": "unhealthy", "container": "factcapture-db-1",
               "exit_code": 0, "replicas": 1},
        "migrate": {"state": "created", "health": None, "container": "factcapture-migrate-1",
                    "exit_code": 0, "replicas": 1},
        "proxy": {"state": "running", "health": None, "container": "factcapture-proxy-1",
                  "exit_code": 0, "replicas": 1},
        # two replicas, both healthy; the one-off `run` container is ignored
        "web": {"state": "running", "health": "healthy", "container": "factcapture-web-2",
                "exit_code": 0, "replicas": 2},
        "worker": {"state": "exited", "health": None, "container": "factcapture-worker-1",
                   "exit_code": 3, "replicas": 1},
    }


def test_v1_named_project():
    assert parse_services(lines("compose_services_v1_labels_docker20.txt")) == {
        "web": {"state": "running", "health": "healthy", "container": "factcapturev1_web_1",
                "exit_code": 0, "replicas": 1},
        "worker": {"state": "exited", "health": None, "container": "factcapturev1_worker_1",
                   "exit_code": 137, "replicas": 1},
    }


def test_a_dead_replica_is_what_gets_reported():
    services = parse_services(lines("compose_services_v2_replica_down_docker20.txt"))
    assert services["web"] == {"state": "exited", "health": "unhealthy",
                               "container": "factcapture-web-2", "exit_code": 137, "replicas": 2}


def test_hand_written_unhealthy_replica_wins_over_healthy_one():
    services = parse_services([
        "api|running|healthy|/music-api-1|False|0",
        "api|running|unhealthy|/music-api-2|False|0",
        "api|running|healthy|/music-api-3|False|0",
    ])
    assert services["api"]["container"] == "music-api-2"
    assert services["api"]["replicas"] == 3


@pytest.mark.parametrize(
    "line",
    ["", "garbage", "|running||/no-service-label|False|0",  # container without compose labels
     "web|running||/x-web-run-1|True|0",  # one-off
     "web|running|healthy|/x|False"],  # truncated
)
def test_lines_that_are_not_services(line):
    assert parse_inspect_line(line) is None


def test_empty_project_is_empty_dict():
    assert ComposeServices.default() == {}
    assert parse_services([]) == {}


# --- unhealthy_services -------------------------------------------------------------------


def test_unhealthy_services_reasons():
    services = parse_services(lines("compose_services_v2_replica_down_docker20.txt"))
    assert unhealthy_services(
        services, ["proxy", "cache", "db", "worker", "migrate", "web", "api"]
    ) == {
        "cache": "running, health check still starting",
        "db": "running but unhealthy",
        "worker": "not running (state exited, exit code 3)",
        "migrate": "not running (state created)",
        "web": "not running (state exited, exit code 137)",
        "api": "missing (no container)",
    }


def test_unhealthy_services_passes_for_healthy_and_checkless_running_services():
    services = parse_services(lines("compose_services_v2_labels_docker20.txt"))
    assert unhealthy_services(services, ["web", "proxy"]) == {}
    assert unhealthy_services(services, []) == {}


def test_hand_written_restarting_and_paused():
    services = parse_services([
        "a|restarting||/p-a-1|False|1",
        "b|paused|healthy|/p-b-1|False|0",
    ])
    assert unhealthy_services(services, ["a", "b"]) == {
        "a": "not running (state restarting)",
        "b": "not running (state paused)",
    }


# --- commands, with a fake docker on PATH -------------------------------------------------

FAKE_DOCKER = """#!/bin/sh
printf '%s\\0' "$@" > "$FAKE_DIR/args.$1"
case "$1" in
  ps)
    if [ -n "$FAKE_PS_FAIL" ]; then
      echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1
    fi
    cat "$FAKE_DIR/ps.out";;
  inspect)
    cat "$FAKE_DIR/inspect.out"
    if [ -n "$FAKE_INSPECT_FAIL" ]; then echo "Error: No such object: 0f0f" >&2; exit 1; fi;;
  compose)
    if [ -n "$FAKE_COMPOSE_V2" ]; then echo "Docker Compose version v2.27.1"; exit 0; fi
    echo "docker: 'compose' is not a docker command." >&2; exit 1;;
esac
"""


@pytest.fixture
def fake(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    (bin_dir / "cat").symlink_to(shutil.which("cat"))
    (tmp_path / "ps.out").write_text("")
    (tmp_path / "inspect.out").write_text("")

    def run(command, **env):
        raw = command if isinstance(command, str) else command.get_raw_value()
        full_env = {**os.environ, "PATH": str(bin_dir), "FAKE_DIR": str(tmp_path), **env}
        return subprocess.run(
            [SH, "-c", raw], capture_output=True, text=True, env=full_env, cwd=tmp_path
        )

    def args(subcommand):
        path = tmp_path / f"args.{subcommand}"
        return path.read_text().split("\0")[:-1] if path.exists() else None

    return {"dir": tmp_path, "bin": bin_dir, "run": run, "args": args}


def test_services_command_passes_project_and_format_as_single_arguments(fake):
    (fake["dir"] / "ps.out").write_text("0f0f\n1e1e\n")
    (fake["dir"] / "inspect.out").write_text("web|running|healthy|/p-web-1|False|0\n")
    project = "it's; touch pwned $(touch pwned)"
    result = fake["run"](ComposeServices().command(project))
    assert result.returncode == 0, result.stderr
    assert fake["args"]("ps") == [
        "ps", "-a", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}"
    ]
    assert fake["args"]("inspect") == ["inspect", "--format", INSPECT_FORMAT, "0f0f", "1e1e"]
    assert not (fake["dir"] / "pwned").exists()
    assert ComposeServices().process(result.stdout.splitlines())["web"]["health"] == "healthy"


def test_inspect_format_is_the_go_template_we_mean():
    assert INSPECT_FORMAT == (
        '{{index .Config.Labels "com.docker.compose.service"}}|{{.State.Status}}'
        "|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.Name}}"
        '|{{index .Config.Labels "com.docker.compose.oneoff"}}|{{.State.ExitCode}}'
    )


def test_no_containers_means_no_inspect_and_exit_0(fake):
    result = fake["run"](build_services_command("music"))
    assert (result.returncode, result.stdout) == (0, "")
    assert fake["args"]("inspect") is None


def test_daemon_unreachable_fails_the_command(fake):
    result = fake["run"](build_services_command("music"), FAKE_PS_FAIL="1")
    assert result.returncode != 0
    assert "Cannot connect" in result.stderr


def test_container_vanishing_between_ps_and_inspect_is_not_an_error(fake):
    (fake["dir"] / "ps.out").write_text("0f0f\n1e1e\n")
    (fake["dir"] / "inspect.out").write_text("web|running||/p-web-1|False|0\n")
    result = fake["run"](build_services_command("music"), FAKE_INSPECT_FAIL="1")
    assert result.returncode == 0
    assert list(parse_services(result.stdout.splitlines())) == ["web"]


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_real_docker_cli_unreachable_daemon_fails_the_command():
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    raw = build_services_command("music").get_raw_value()
    result = subprocess.run([SH, "-c", raw], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert result.stdout == ""


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_real_docker_project_without_containers():
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no reachable Docker daemon")
    raw = build_services_command("facts-test-no-such-project").get_raw_value()
    result = subprocess.run([SH, "-c", raw], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "")


# --- ComposeCli ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output, cli",
    [(["docker compose"], "docker compose"), (["docker-compose"], "docker-compose"),
     ([], None), (["something else"], None)],
)
def test_compose_cli_process(output, cli):
    assert ComposeCli().process(output) == cli


def plugin(directory, metadata='{"SchemaVersion":"0.1.0","Vendor":"Docker Inc.","Version":"v2.27.1"}'):
    """A fake compose plugin in `directory`: answers the CLI's metadata handshake."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "docker-compose"
    path.write_text(f"#!/bin/sh\n[ \"$1\" = docker-cli-plugin-metadata ] && echo '{metadata}'\n")
    path.chmod(0o755)
    return path


def cli_run(fake, **env):
    """ComposeCli's command with the plugin dirs and HOME inside the test's directory."""
    command = compose_cli_command(plugin_dirs=(str(fake["dir"] / "usr-lib"), str(fake["dir"] / "usr-libexec")))
    return fake["run"](command, HOME=str(fake["dir"] / "home"), DOCKER_CONFIG="", **env)


def v1_binary(fake):
    v1 = fake["bin"] / "docker-compose"
    v1.write_text("#!/bin/sh\nexit 0\n")
    v1.chmod(0o755)


def test_the_fact_looks_where_the_docker_cli_looks():
    assert ComposeCli().command() == compose_cli_command(PLUGIN_DIRS)
    assert PLUGIN_DIRS == ("/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
                           "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")


@pytest.mark.parametrize("where", ["usr-lib", "usr-libexec", "home/.docker/cli-plugins"])
def test_compose_cli_prefers_v2_plugin_found_as_the_docker_cli_finds_it(fake, where):
    v1_binary(fake)
    plugin(fake["dir"] / where)
    result = cli_run(fake)
    assert result.stdout == "docker compose\n"
    assert fake["args"]("compose") is None  # the handshake only: no `docker compose version`


def test_a_plugin_that_fails_the_handshake_is_not_v2(fake):
    v1_binary(fake)
    plugin(fake["dir"] / "usr-lib", metadata="not a plugin")
    assert cli_run(fake).stdout == "docker-compose\n"


def test_a_plugin_without_the_docker_cli_is_not_v2(fake):
    (fake["bin"] / "docker").unlink()
    plugin(fake["dir"] / "usr-lib")
    assert cli_run(fake).stdout == ""


def test_extra_plugin_dirs_ask_docker_compose_version_itself(fake):
    config = fake["dir"] / "home/.docker"
    config.mkdir(parents=True)
    (config / "config.json").write_text('{"cliPluginsExtraDirs": ["/opt/plugins"]}')
    assert cli_run(fake, FAKE_COMPOSE_V2="1").stdout == "docker compose\n"
    assert fake["args"]("compose") == ["compose", "version"]
    (config / "config.json").write_text("{}")
    assert cli_run(fake, DOCKER_CLI_PLUGIN_EXTRA_DIRS="/opt/plugins", FAKE_COMPOSE_V2="1").stdout == "docker compose\n"
    assert cli_run(fake, DOCKER_CLI_PLUGIN_EXTRA_DIRS="/opt/plugins").stdout == ""


def test_compose_cli_falls_back_to_v1_binary(fake):
    v1_binary(fake)
    result = cli_run(fake, FAKE_COMPOSE_V2="1")  # a `docker compose` without a plugin file is not asked
    assert (result.returncode, result.stdout) == (0, "docker-compose\n")


def test_compose_cli_none_installed(fake):
    (fake["bin"] / "docker").unlink()
    result = cli_run(fake)
    assert (result.returncode, result.stdout) == (0, "")  # -> default() None
    assert ComposeCli.default() is None
