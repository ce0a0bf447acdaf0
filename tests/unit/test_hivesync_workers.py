"""deploys/hivesync.py, workstation role: routes and cron triggers as data in wrangler.toml,
the stand-ins (npm ci, wrangler --dry-run / r2 object put) behave like the real tools."""

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from deploys import operations
from deploys.parts import hivesync_config, hivesync_workers, wrangler
from deploys.errors import ConfigError
from tests.unit.test_hivesync_deploy import APPS, data

SPEC = {"main": "index.js", "routes": ["a.example.com/p/*", {"pattern": "b.example.com/*", "zone_name": "example.com"}],
        "crons": ["*/5 * * * *"]}


def test_routes_and_crons_go_to_the_production_env_only():
    d = data(hivesync_workers={"preview_builder": SPEC})
    config = tomllib.loads(hivesync_workers.render_wrangler_toml(d, "preview_builder"))
    prod, dev = config["env"]["production"], config["env"]["dev"]
    assert prod["routes"] == [{"pattern": "a.example.com/p/*"}, {"pattern": "b.example.com/*", "zone_name": "example.com"}]
    assert prod["triggers"] == {"crons": ["*/5 * * * *"]}
    assert "routes" not in dev and "triggers" not in dev and config["workers_dev"] is False


def test_bad_routes_and_crons_are_named():
    bad = {"main": "index.js", "routes": ["https://a.example.com/*", {"pattern": "x/*", "zone": "y"}],
           "crons": ["every hour"], "route": []}
    with pytest.raises(ConfigError) as err:
        hivesync_config.check_config(data(hivesync_workers={"preview_builder": bad}))
    text = str(err.value)
    assert "unknown key 'route'" in text and text.count("a pattern like") == 2 and "'every hour' is not a 5-field" in text


def run(tool: str, cwd: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(APPS / tool), *args], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_npm_standin_installs_the_lockfile_and_refuses_a_stale_one(tmp_path):
    src = tmp_path / "w"
    subprocess.run(["cp", "-r", str(APPS / "workers/preview_builder"), str(src)], check=True)
    log = {"NPM_STANDIN_LOG": str(tmp_path / "npm.jsonl")}
    assert run("npm", src, "ci", env=log).returncode == 0
    assert json.loads((src / "node_modules/itty-router/package.json").read_text())["version"] == "5.0.18"
    package = json.loads((src / "package.json").read_text())
    package["dependencies"]["left-pad"] = "1.0.0"
    (src / "package.json").write_text(json.dumps(package))
    assert run("npm", src, "ci", env=log).returncode == 1


def test_wrangler_standin_dry_run_needs_node_modules_and_r2_put_needs_the_bucket(tmp_path):
    d = data(hivesync_workers={"preview_builder": SPEC})
    work = tmp_path / "preview_builder"
    subprocess.run(["cp", "-r", str(APPS / "workers/preview_builder"), str(work / "src")], check=True) \
        if work.mkdir() is None else None
    (work / "wrangler.toml").write_text(hivesync_workers.render_wrangler_toml(d, "preview_builder"))
    env = {"WRANGLER_STANDIN_LOG": str(tmp_path / "w.jsonl")}
    dry = run("wrangler", work, "deploy", "--dry-run", "--config", "wrangler.toml", "--env", "production", env=env)
    assert dry.returncode == 1 and "could not resolve 'itty-router'" in dry.stderr
    assert run("npm", work / "src", "ci", env={"NPM_STANDIN_LOG": str(tmp_path / "n")}).returncode == 0
    dry = run("wrangler", work, "deploy", "--dry-run", "--config", "wrangler.toml", "--env", "production", env=env)
    assert dry.returncode == 0 and "Deployed" not in dry.stdout
    (tmp_path / "empty").write_text("")
    put = ["r2", "object", "put", "hivesync-r2/previews/", "--file", str(tmp_path / "empty"), "--remote"]
    assert run("wrangler", work, *put, env=env).returncode == 1  # no such bucket yet
    assert run("wrangler", work, "r2", "bucket", "create", "hivesync-r2", env=env).returncode == 0
    assert run("wrangler", work, *put, env=env).returncode == 0
    assert run("wrangler", work, *put[:-1], env=env).returncode == 1  # wrangler 4: local unless --remote


def test_r2_placeholders_put_every_prefix_then_record(monkeypatch):
    class Host:
        data = data()
        noops = []

        def get_fact(self, *a, **k):
            return None

        def noop(self, text):
            self.noops.append(text)

    fake = Host()
    monkeypatch.setattr(wrangler, "host", fake)
    monkeypatch.setattr(operations, "host", fake)  # recorded(): the record file
    [command] = list(wrangler.r2_placeholders._inner(bucket="hivesync-r2", prefixes=["previews/", "ai-docs/"],
                                                      record="/s/.r2-hivesync-r2.placeholders",
                                                      wrangler="wrangler"))
    text = command.get_raw_value()
    assert text.count("r2 object put") == 2 and "hivesync-r2/ai-docs/ --file" in text and "--remote" in text
    assert text.index("echo") > text.rindex("r2 object put")  # the record only after every put
