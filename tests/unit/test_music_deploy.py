"""deploys/music.py helpers: config checks, releases, HAOS import, vhosts, health script."""

import io
import runpy
import subprocess
import tarfile

import pytest

from deploys.errors import ConfigError
from deploys.music import (
    _health_units,
    check_config,
    code_files,
    haos_settings_json,
    has_requirements,
    vhosts,
)
from deploys.parts.nginx import normalise_vhosts
from deploys.parts.releases import release_id


class Data(dict):
    __getattr__ = dict.get


def data(**overrides):
    values = {k: v for k, v in runpy.run_path("group_data/music.py").items() if not k.startswith("_")}
    values.update({"oauth_server_src": "tests/apps/oauth_server", **overrides})
    return Data(values)


def test_defaults_with_an_oauth_source_are_valid():
    check_config(data())


def test_every_missing_source_is_reported_together():
    with pytest.raises(ConfigError) as err:
        check_config(data(oauth_server_src=None, music_assistant_spec=None))
    assert "oauth_server_src" in str(err.value) and "music_assistant_spec" in str(err.value)
    with pytest.raises(ConfigError, match="music_state 'gone'"):
        check_config(data(music_state="gone"))


def test_removal_needs_no_sources():
    check_config(data(oauth_server_src=None, music_state="absent"))


def test_code_upload_never_includes_env_files_or_caches(tmp_path):
    (tmp_path / "server.py").write_text("x")
    (tmp_path / ".env").write_text("ALEXA_CLIENT_SECRET=s3cret")
    (tmp_path / ".env.local").write_text("X=1")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "server.cpython-311.pyc").write_text("x")
    assert [rel for _, rel in code_files(tmp_path)] == ["server.py"]


def test_release_id_changes_only_with_inputs():
    assert release_id("spec", "music-assistant @ git+x@1") == release_id("spec", "music-assistant @ git+x@1")
    assert release_id("spec", "music-assistant @ git+x@1") != release_id("spec", "music-assistant @ git+x@2")


def test_requirements_with_only_comments_install_nothing(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# nothing\n\n")
    assert not has_requirements(req)
    req.write_text("aiohttp==3.9.5\n")
    assert has_requirements(req)


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_settings_json_is_found_in_the_music_assistant_addon_of_a_haos_backup(tmp_path):
    backup = tmp_path / "backup.tar"
    with tarfile.open(backup, "w") as outer:
        for name, content in {
            "backup.json": b"{}",
            "core_mosquitto.tar.gz": _tar({"data/settings.json": b'{"other": 1}'}),
            "d5369777_music_assistant.tar.gz": _tar({"data/settings.json": b'{"mass": 1}'}),
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            outer.addfile(info, io.BytesIO(content))
    assert haos_settings_json(backup) == b'{"mass": 1}'


def test_public_vhosts_proxy_to_loopback_with_websocket_for_music():
    hosts = normalise_vhosts(vhosts(data(music_denied_paths=["/internal/"])))
    music, oauth = hosts
    assert music["upstream"] == "127.0.0.1:8095" and music["websocket"]
    assert music["locations"][0]["deny"]
    assert oauth["upstream"] == "127.0.0.1:8096" and not oauth["websocket"]


def test_health_check_script_is_valid_sh_and_checks_the_success_criteria():
    units = _health_units(data())
    script = units["/opt/music-assistant/bin/music-health-check"].read()
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert "http://127.0.0.1:8095/" in script and "http://127.0.0.1:8096/health" in script
    assert "-lt 100" in script and "-p err" in script
    timer = units["/etc/systemd/system/music-health-check.timer"].read()
    assert "OnUnitActiveSec=5min" in timer
