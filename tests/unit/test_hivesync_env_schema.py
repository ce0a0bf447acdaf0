"""deploys/env_schema.py: HiveSync's backend and worker variables as a typed schema,
checked with every other knob before pyinfra connects (deploys/settings.py), and again by
deploys/hivesync.py on the effective data."""

import json

import pytest

from deploys import settings
from deploys.parts import hivesync_config, hivesync_stack, hivesync_workers
from deploys.env_schema import BACKEND, WORKERS, Var, env_problems, var_problem
from deploys.errors import ConfigError
from tests.unit.test_hivesync_deploy import data

MODELS = ["gpt-4.1", "gpt-4o-mini"]


def settings_problems(monkeypatch, env="test", **values) -> str:
    monkeypatch.setenv("DEPLOY_ENV", env)
    argv = ["pyinfra"] + [a for k, v in values.items() for a in ("--data", f"{k}={settings.cli_data_value(v)}")]
    try:
        settings.check([], argv)
    except ConfigError as exc:
        return str(exc)
    return ""


def test_the_defaults_pass_in_production_too(monkeypatch):
    assert settings_problems(monkeypatch, env="prod") == ""
    monkeypatch.setenv("DEPLOY_ENV", "prod")
    assert hivesync_config.schema_problems(data()) == []


def test_every_wrong_variable_is_named_in_one_message_before_connecting(monkeypatch):
    env = {**data().hivesync_backend_env, "POSTGRES_PORT": "5432x", "REDIS_PORT": 70000, "AI_MODEL": "gpt-9",
           "LOCAL_AI_ENABLED": "maybe", "LOG_LEVEL": "loud", "PREVIEW_MAX_TIMEOUT_MS": 5, "R2_BUCKET": "other",
           "PORT": 5000, "R2_PUBLIC_BASE_URL": "ftp://cdn", "NOT_A_SETTING": "1"}
    del env["POSTGRES_DB"]
    text = settings_problems(monkeypatch, hivesync_backend_env=env, hivesync_r2_bucket="Bad_Bucket",
                             hivesync_r2_endpoint="r2.example")
    assert text.startswith("settings: 3 problem(s)"), text
    for part in ("POSTGRES_PORT '5432x' is not an integer", "REDIS_PORT 70000 is out of range 1-65535",
                 "AI_MODEL 'gpt-9' is not one of hivesync_ai_models", "LOCAL_AI_ENABLED 'maybe' is not a boolean",
                 "LOG_LEVEL 'loud' is not one of debug", "PREVIEW_MAX_TIMEOUT_MS 5 is out of range 1000-600000",
                 "R2_BUCKET is set in one place, hivesync_r2_bucket", "PORT is set in one place, hivesync_backend_port",
                 "R2_PUBLIC_BASE_URL 'ftp://cdn' is not an http(s) URL", "NOT_A_SETTING is not a variable the backend reads",
                 "missing POSTGRES_DB", "hivesync_r2_bucket (--data): 'Bad_Bucket' is not an R2 bucket name",
                 "hivesync_r2_endpoint (--data): 'r2.example' is not an http(s) URL"):
        assert part in text, part


def test_urls_must_be_https_in_production_only(monkeypatch):
    env = {**data().hivesync_backend_env, "R2_PUBLIC_BASE_URL": "http://cdn.example.com"}
    assert settings_problems(monkeypatch, hivesync_backend_env=env) == ""
    assert "'http://cdn.example.com' must be https in production" in settings_problems(
        monkeypatch, env="prod", hivesync_backend_env=env)
    assert "must be https in production" in settings_problems(monkeypatch, env="prod",
                                                              hivesync_r2_endpoint="http://r2.example.com")


def test_the_deploy_checks_the_effective_model_list_and_the_workers_variables(monkeypatch):
    monkeypatch.setenv("DEPLOY_ENV", "prod")
    problems = "; ".join(hivesync_config.schema_problems(data(hivesync_ai_models=["gpt-4o"])))
    assert "hivesync_backend_env: AI_MODEL 'gpt-4.1' is not one of hivesync_ai_models (gpt-4o)" in problems
    assert "worker variables [env.production]: AI_MODEL 'gpt-4.1'" in problems
    with pytest.raises(ConfigError, match="AI_MODEL 'gpt-4.1' is not one of"):
        hivesync_config.check_config(data(hivesync_ai_models=["gpt-4o"]))
    # the dev worker talks to a local http backend: allowed even in production
    assert not [p for p in hivesync_config.schema_problems(data()) if "[env.dev]" in p]


def test_the_bucket_and_the_model_are_each_set_in_one_place():
    d = data(hivesync_r2_bucket="team-bucket")
    assert hivesync_stack.backend_env(d)["R2_BUCKET"] == "team-bucket"
    for env in hivesync_workers.worker_envs(d):
        assert env["bucket"] == env["vars"]["R2_BUCKET"] == "team-bucket"
        assert env["vars"]["AI_MODEL"] == hivesync_stack.backend_env(d)["AI_MODEL"]
    assert hivesync_stack.backend_env(d)["LOCAL_AI_ENABLED"] == "false"  # a bool, written as the app reads it
    assert hivesync_stack.backend_env(data(hivesync_backend_port=5000, hivesync_backend_command=["uvicorn", "--port",
                                                                                           "{port}"]))["PORT"] == "5000"


@pytest.mark.parametrize("var, value, problem", [
    (Var("bool"), True, None), (Var("bool"), "TRUE", None), (Var("bool"), "on", "not a boolean"),
    (Var("port"), True, "not an integer"), (Var("port"), 0, "out of range"), (Var("host"), "postgres", None),
    (Var("host"), "bad host", "not a host name"), (Var("path"), "models", "not an absolute path"),
    (Var("url", optional=True), "", None), (Var("url"), "", "is empty"), (Var("bucket"), "a--b", "not an R2 bucket"),
    (Var("bucket"), "ab", "not an R2 bucket"), (Var("int", minimum=1), 1, None),
])
def test_kinds(var, value, problem):
    found = var_problem(var, value, MODELS, https=True)
    assert (found is None) if problem is None else (problem in found), found


def test_the_schema_covers_the_plans_and_the_apps_variables():
    # the plan's N.3 backend list: data here, derived (ELSEWHERE), or a secret
    d = data()
    names = set(BACKEND) | set(hivesync_stack.backend_env(d)) | set(d.required_secrets) | set(d.hivesync_generated_secrets)
    for plan_var in ("PORT", "BASE_URL", "AI_MODEL", "LOCAL_AI_ENABLED", "R2_BUCKET", "R2_PUBLIC_BASE_URL",
                     "WORKER_CALLBACK_SECRET", "PREVIEW_MAX_TIMEOUT_MS"):
        assert plan_var in names
    assert set(WORKERS) >= {"R2_BUCKET", "WORKER_CALLBACK_URL", "AI_MODEL"}
    assert env_problems(dict(d.hivesync_backend_env), BACKEND, d.hivesync_ai_models, https=True) == []
    json.dumps(d.hivesync_backend_env)  # --data can carry it
