"""deploys/parts/generated_env.py: the spec the host script gets, and which .env values a
stack receives (required ones must be set, optional ones pass through or stay empty)."""

import json
import subprocess

import pytest

from deploys import secrets
from deploys.errors import SecretsMissing
from deploys.parts import generated_env


class Data(dict):
    __getattr__ = dict.get


def test_spec_names_the_files_and_what_to_generate():
    spec = generated_env.env_spec(secrets_dir="/etc/x", target="/opt/x/.env", random={"A": 8}, header="# h\n")
    assert spec == {"generated": "/etc/x/generated.env", "user": "/etc/x/user.env", "target": "/opt/x/.env",
                    "random": {"A": 8}, "jwt": {}, "jwt_secret": "JWT_SECRET", "jwt_expiry_s": 0, "header": "# h\n"}


def test_host_script_generates_once_and_merges_user_values(tmp_path):
    spec = generated_env.env_spec(secrets_dir=str(tmp_path / "etc"), target=str(tmp_path / "opt/.env"),
                                  random={"PEPPER": 16, "JWT_SECRET": 32}, header="# managed\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "opt").mkdir()
    (tmp_path / "etc/user.env").write_text("R2_ACCESS_KEY=abc\n")

    def run(mode):
        out = subprocess.run(["python3", "-c", generated_env.ENV_SCRIPT, mode, json.dumps(spec)],
                             capture_output=True, text=True, check=True).stdout
        return out

    assert sorted(json.loads(run("check").splitlines()[-1])["missing"]) == ["JWT_SECRET", "PEPPER"]
    run("apply")
    first = (tmp_path / "opt/.env").read_text()
    assert "R2_ACCESS_KEY=abc" in first and "PEPPER=" in first
    run("apply")
    assert (tmp_path / "opt/.env").read_text() == first  # generated once, kept
    assert json.loads(run("check").splitlines()[-1])["ok"] is True


def test_user_secrets_required_and_optional(monkeypatch):
    monkeypatch.setattr(secrets, "load", lambda: {"NEED": "v", "OPT": "REPLACE_ME"})
    found = generated_env.user_secrets(Data(required_secrets=["NEED"]), optional=["OPT", "ABSENT"])
    assert {k: v.unmask() for k, v in found.items()} == {"NEED": "v", "OPT": "", "ABSENT": ""}
    monkeypatch.setattr(secrets, "load", lambda: {})
    with pytest.raises(SecretsMissing):
        generated_env.user_secrets(Data(required_secrets=["NEED"]))
