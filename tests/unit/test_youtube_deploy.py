"""deploys/youtube.py without a host: knobs, paths, production env files, commands and
systemd user units rendered from group_data/youtube.py."""

from __future__ import annotations

import runpy
import shlex
import subprocess

import pytest

from deploys.errors import ConfigError
from deploys.parts.procs import start_command
from deploys.parts.service import render_env_file
from deploys.youtube import (
    Layout,
    backend_env,
    check_config,
    digest,
    expand,
    first_word,
    frontend_env,
    proc_specs,
    run_script,
    systemd_exec_quote,
    unit_files,
)

HOME = "/home/jo"


class Data(dict):
    __getattr__ = dict.get


def data(**overrides) -> Data:
    values = {k: v for k, v in runpy.run_path("group_data/youtube.py").items() if not k.startswith("_")}
    values.update({"health_timeout_s": 60, **overrides})
    return Data(values)


def layout(d: Data | None = None) -> Layout:
    return Layout.from_data(d or data(), HOME)


def test_defaults_match_the_plan():
    d = data()
    check_config(d)
    lay = layout(d)
    assert lay.prod == f"{HOME}/aqa-youtube-assistant-prod"
    # outside the releases, so every backend release (and a rollback) sees the same file
    assert lay.db_path == f"{HOME}/aqa-youtube-assistant-prod/shared/youtube_assistant_prod.db"
    assert lay.venv == f"{HOME}/aqa-youtube-assistant-prod/backend/venv-prod"
    assert lay.pids == f"{HOME}/aqa-youtube-assistant-prod/pids"
    backend, frontend = proc_specs(d, lay)
    assert (backend.port, frontend.port) == (8001, 3001)
    # each release carries its command (.infra-run), so a rollback brings the old command back
    assert backend.command == frontend.command == "sh ./.infra-run"
    assert run_script(d, lay, "backend").endswith("-m uvicorn app.main:app --host 127.0.0.1 --port 8001\n")
    assert run_script(d, lay, "frontend").endswith("\nexec npm start -- -H 127.0.0.1 -p 3001\n")
    assert backend.log == f"{lay.prod}/backend.log" and frontend.pidfile == f"{lay.prod}/pids/frontend.pid"
    assert backend.health_url == "http://127.0.0.1:8001/api/health"
    assert backend_env(d, lay) == {
        "DATABASE_URL": f"sqlite:///{lay.db_path}",  # absolute: sqlite:////home/...
        "PORT": "8001",
        "HOST": "127.0.0.1",
        "RELOAD": "false",
        "LOG_LEVEL": "info",
        "CORS_ORIGINS": "http://localhost:3001",
    }
    assert frontend_env(d, lay) == {"NEXT_PUBLIC_API_URL": "http://localhost:8001", "PORT": "3001", "NEXT_TELEMETRY_DISABLED": "1"}
    assert d.youtube_mode is None  # the mode recorded on the machine
    assert "next-env.d.ts" in d.youtube_frontend_excludes


@pytest.mark.parametrize(
    ("path", "expected"),
    [("~/x", f"{HOME}/x"), ("~", HOME), ("x/y", f"{HOME}/x/y"), ("/opt/x/", "/opt/x")],
)
def test_expand(path, expected):
    assert expand(path, HOME) == expected


def test_every_conflict_with_development_is_reported_together():
    with pytest.raises(ConfigError) as err:
        check_config(data(
            youtube_backend_port=8000, youtube_frontend_port=3000, youtube_db_name="youtube_assistant.db",
            youtube_prod_dir="~/dev/aqa-youtube-assistant/prod", youtube_mode="docker", youtube_action="deploy-all",
        ))
    message = str(err.value)
    for words in (
        "youtube_backend_port 8000 is a development port", "youtube_frontend_port 3000 is a development port",
        "'youtube_assistant.db' is the development database", "youtube_prod_dir must not be inside the development checkout",
        "youtube_mode 'docker'", "youtube_action 'deploy-all'",
    ):
        assert words in message


def test_other_bad_knobs():
    with pytest.raises(ConfigError, match="same port"):
        check_config(data(youtube_frontend_port=8001))
    with pytest.raises(ConfigError, match="plain file name"):
        check_config(data(youtube_db_name="../x.db"))
    with pytest.raises(ConfigError, match="unknown placeholder"):
        check_config(data(youtube_backend_cmd="{python} -m uvicorn"))
    with pytest.raises(ConfigError, match="not in youtube_frontend_paths"):
        check_config(data(youtube_frontend_artifact="dist"))
    with pytest.raises(ConfigError, match="invalid variable names"):
        check_config(data(youtube_backend_secrets=["NOT-OK"]))


def test_secret_values_land_in_the_env_file_only():
    d = data(youtube_backend_secrets=["YOUTUBE_API_KEY"])
    env = render_env_file(backend_env(d, layout(d), {"YOUTUBE_API_KEY": 'k "1" $x'}))
    assert 'YOUTUBE_API_KEY="k \\"1\\" \\$x"' in env.unmask()
    for text in unit_files(proc_specs(d, layout(d)), d).values():
        assert "k \\\"1" not in text and "YOUTUBE_API_KEY" not in text


def test_env_file_is_shell_and_systemd_safe(tmp_path):
    value = 'a "b" $HOME `id` \\ %n'
    path = tmp_path / ".env"
    path.write_text(render_env_file({"V": value}).unmask())
    out = subprocess.run(["sh", "-c", f'set -a; . {shlex.quote(str(path))}; printf %s "$V"'], capture_output=True, text=True)
    assert out.stdout == value


def test_user_units_always_restart_start_at_login_and_log_in_the_prod_dir():
    d = data(youtube_path_prepend=["~/.nvm/versions/node/v20/bin"])
    lay = layout(d)
    units = unit_files(proc_specs(d, lay), d)
    backend, frontend = units["aqa-youtube-prod-backend.service"], units["aqa-youtube-prod-frontend.service"]
    assert "Restart=always" in backend and "WantedBy=default.target" in backend  # npm exits 0 on SIGTERM
    assert f"EnvironmentFile={lay.backend}/.env" in backend and f"WorkingDirectory={lay.backend}" in backend
    assert f"StandardOutput=append:{lay.prod}/backend.log" in backend
    assert f'Environment="INFRA_PROC=aqa-youtube-prod:{lay.prod}:backend:systemd"' in backend
    assert "After=aqa-youtube-prod-backend.service" in frontend
    assert 'ExecStart=/bin/sh -c "exec sh ./.infra-run"' in frontend
    assert f'PATH={HOME}/.nvm/versions/node/v20/bin:"$PATH"; export PATH\n' in run_script(d, lay, "frontend")
    assert "TimeoutStopSec=15" in backend
    # the log is size-capped before each start (20 MiB by default)
    assert f"ExecStartPre=/bin/sh -c \"[ $$(stat -c %%s {lay.prod}/backend.log 2>/dev/null || echo 0) -le 20971520 ]" in backend


def test_exec_quoting_survives_systemd_unescaping():
    quoted = systemd_exec_quote('echo "50%" $HOME \\n')
    assert quoted == '"echo \\"50%%\\" $$HOME \\\\n"'


def test_start_command_loads_the_env_file_and_marks_the_process():
    d = data()
    backend = proc_specs(d, layout(d))[0]
    cmd = start_command(backend)
    assert f"cd {backend.cwd} && umask 077" in cmd
    assert f"set -a && . {backend.env_file} && set +a" in cmd
    assert f"INFRA_PROC={backend.family}:pidfile" in cmd or f"INFRA_PROC='{backend.family}:pidfile'" in cmd
    assert "nohup setsid sh -c" in cmd and f">> {backend.log} 2>&1 < /dev/null &" in cmd


@pytest.mark.parametrize(
    ("command", "word"),
    [("npm run build", "npm"), ("NODE_ENV=production npm start", "npm"), ("/x/venv/bin/python -m y", "/x/venv/bin/python"), ("", None)],
)
def test_first_word(command, word):
    assert first_word(command) == word


def test_digest_is_stable_and_sensitive():
    assert digest("a", {"x": 1, "y": 2}) == digest("a", {"y": 2, "x": 1})
    assert digest("a", [1]) != digest("a", [2])


def test_interpreter_preflight_asks_for_the_version_the_app_needs():
    from deploys.youtube import Context, interpreter_problems, version_tuple

    d = data()
    ctx = Context(d, {}, layout(d), proc_specs(d, layout(d)))
    old = {"path": "/usr/bin/python3", "version": "3.9.2", "requested": "python3", "source": "default"}
    (problem,) = interpreter_problems(ctx, old)
    assert "needs Python 3.11+ (datetime.UTC), but /usr/bin/python3 is 3.9.2: set youtube_python" in problem
    assert interpreter_problems(ctx, {**old, "version": "3.13.1"}) == []
    assert "does not run" in interpreter_problems(ctx, {"path": None, "requested": "python3.13"})[0]
    assert version_tuple("3.11") < version_tuple("3.11.2") < version_tuple("3.13")
    with pytest.raises(ConfigError, match="youtube_python_min"):
        check_config(data(youtube_python_min=3.11))
    with pytest.raises(ConfigError, match="youtube_mode 'systemctl'"):
        check_config(data(youtube_mode="systemctl"))
    with pytest.raises(ConfigError, match="release_action 'undo'"):
        check_config(data(release_action="undo"))
