"""What the music deploy learned from the real Music Assistant 2.3.0 (issue 10): facts
parsed from captured output, settings/backup scripts run locally, and the stand-in's own
behaviour (it must fail the way MA fails)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tarfile
import time
import venv
from pathlib import Path

import pytest

from deploys.music import (
    _MERGE_SETTINGS,
    firewall_rules,
    ma_listen_settings,
    requirement_with_extras,
    spec_problem,
    web_access,
)
from deploys.parts.data_backup import DIR_SNAPSHOT_SCRIPT as _BACKUP_SCRIPT
from facts.music import ffmpeg_major, ffmpeg_problem, parse_tools, python_problem
from facts.units import describe_unit, parse_unit_diagnostics
from tests.apps.music_assistant.build import build_wheel


class Data(dict):
    __getattr__ = dict.get


def data(**extra):
    base = {"music_stream_allow_from": None, "music_assistant_port": 8095, "music_stream_port": 8097,
            "music_firewall_allow": [22, 80, 443], "music_web_allow_from": [], "music_web_satisfy": "all",
            "music_web_password_secret": "MUSIC_WEB_PASSWORD", "music_nginx_site": "music-assistant"}
    return Data({**base, **extra})


# ------------------------------------------------------------------ facts


def test_ffmpeg_major_from_version_line_and_apt_candidate():
    assert ffmpeg_major("ffmpeg version 5.1.6-0+deb12u1 Copyright (c) 2000-2024") == 5
    assert ffmpeg_major("ffmpeg version 7.1.1-1+b1 Copyright") == 7
    assert ffmpeg_major("7:6.1.1-3ubuntu5") == 6
    assert ffmpeg_major("") is None


def test_ffmpeg_problem_names_too_old_missing_or_passes():
    bookworm = parse_tools(["python=3.11", "ffmpeg=", "candidate=", "os=debian:12"])
    assert "ffmpeg 5.x (debian 12's archive) is older than 6" in ffmpeg_problem(bookworm, 6)
    assert ffmpeg_problem(bookworm, 5) is None
    installed = parse_tools(["python=3.12", "ffmpeg=ffmpeg version 4.4.2 Copyright", "candidate=7:4.4.2", "os=ubuntu:22.04"])
    assert "installed ffmpeg version 4.4.2" in ffmpeg_problem(installed, 6)
    noble = parse_tools(["python=3.12", "ffmpeg=", "candidate=7:6.1.1-3ubuntu5", "os=ubuntu:24.04"])
    assert ffmpeg_problem(noble, 6) is None
    none = parse_tools(["python=3.12", "ffmpeg=", "candidate=(none)", "os=other:1"])
    assert "apt has no ffmpeg package" in ffmpeg_problem(none, 6)
    unknown = parse_tools(["python=3.12", "ffmpeg=", "candidate=", "os=other:1"])
    assert ffmpeg_problem(unknown, 6) is None  # checked again after the install


def test_python_problem():
    assert python_problem({"python": "3.11"}) is None
    assert "older than 3.11" in python_problem({"python": "3.10"})
    assert python_problem({}) == "python3 is missing"


def test_unit_diagnostics_are_parsed_and_described():
    diag = parse_unit_diagnostics([
        "--- unit state ---", "LoadState=loaded", "ActiveState=activating", "SubState=auto-restart",
        "Result=exit-code", "NRestarts=7", "ExecMainStatus=1", "--- journal ---",
        "ModuleNotFoundError: No module named 'aiorun'",
    ])
    text = describe_unit("music-assistant.service", diag)
    assert "activating/auto-restart" in text and "restarts 7" in text and "exit status 1" in text
    assert "No module named 'aiorun'" in text


# ------------------------------------------------------------------ knobs


def test_extras_apply_to_a_pinned_spec():
    spec = "music-assistant @ git+https://github.com/music-assistant/server.git@2.3.0"
    assert requirement_with_extras(spec, ["server"]).startswith("music-assistant[server] @ git+")
    assert requirement_with_extras("music-assistant==2.3.0", ["server"]) == "music-assistant[server]==2.3.0"
    assert spec_problem(spec) is None and spec_problem("music-assistant==2.3.0") is None
    assert "not pinned" in spec_problem("music-assistant>=2.3")
    assert "not a pip requirement" in spec_problem("music assistant ???")


def test_ma_listens_on_loopback_unless_the_stream_port_is_opened():
    assert ma_listen_settings(data()) == {
        "webserver": {"bind_ip": "127.0.0.1", "bind_port": 8095},
        "streams": {"bind_ip": "127.0.0.1", "bind_port": 8097},
    }
    opened = data(music_stream_allow_from="192.168.1.0/24")
    assert ma_listen_settings(opened)["streams"]["bind_ip"] == "0.0.0.0"
    assert ma_listen_settings(opened)["webserver"]["bind_ip"] == "127.0.0.1"
    assert firewall_rules(data()) == [22, 80, 443]
    assert firewall_rules(opened)[-1] == {"port": "8097/tcp", "from": "192.168.1.0/24"}


def test_public_vhost_access_from_password_and_or_allow_list():
    assert web_access(data()) == {"allow": [], "auth_file": "/etc/nginx/infra-auth/music-assistant.htpasswd",
                                  "realm": "Music Assistant"}
    both = web_access(data(music_web_allow_from=["10.0.0.0/8"], music_web_satisfy="any"))
    assert both["satisfy"] == "any" and both["allow"] == ["10.0.0.0/8"]
    assert web_access(data(music_web_password_secret=None, music_web_allow_from=["10.0.0.0/8"])) == {
        "allow": ["10.0.0.0/8"]}


# ------------------------------------------------------------------ host scripts, run here


def test_settings_merge_keeps_the_users_settings(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"server_id": "abc", "providers": {"x": {"domain": "y"}},
                                "core": {"webserver": {"domain": "webserver", "values": {"base_url": "https://m"}}}}))
    wanted = {"webserver": {"bind_ip": "127.0.0.1"}, "streams": {"bind_ip": "127.0.0.1"}}
    subprocess.run([sys.executable, "-c", _MERGE_SETTINGS, str(path), json.dumps(wanted)], check=True)
    merged = json.loads(path.read_text())
    assert merged["server_id"] == "abc" and merged["providers"] == {"x": {"domain": "y"}}
    assert merged["core"]["webserver"] == {"domain": "webserver", "values": {"base_url": "https://m", "bind_ip": "127.0.0.1"}}
    assert merged["core"]["streams"] == {"domain": "streams", "values": {"bind_ip": "127.0.0.1"}}


def test_settings_merge_starts_from_the_backup_as_ma_does(tmp_path):
    path = tmp_path / "settings.json"
    (tmp_path / "settings.json.backup").write_text(json.dumps({"server_id": "from-backup"}))
    subprocess.run([sys.executable, "-c", _MERGE_SETTINGS, str(path), json.dumps({"webserver": {"bind_ip": "127.0.0.1"}})],
                   check=True)
    assert json.loads(path.read_text())["server_id"] == "from-backup"


def test_backup_of_a_live_sqlite_database_is_consistent(tmp_path):
    data_dir, archive = tmp_path / "data", tmp_path / "backups" / "data-x.tar.gz"
    data_dir.mkdir()
    archive.parent.mkdir()
    (data_dir / "settings.json").write_text("{}")
    writer = sqlite3.connect(data_dir / "library.db")
    writer.execute("pragma journal_mode=wal")
    writer.execute("create table tracks (id integer primary key, name text)")
    writer.executemany("insert into tracks(name) values (?)", [(f"t{i}",) for i in range(500)])
    writer.commit()  # committed rows live in the -wal file, which a plain copy would miss
    writer.execute("insert into tracks(name) values ('uncommitted')")  # an open transaction
    subprocess.run([sys.executable, "-c", _BACKUP_SCRIPT, str(data_dir), str(archive)], check=True, timeout=60)
    writer.rollback()
    writer.close()
    out = tmp_path / "out"
    with tarfile.open(archive) as tar:
        assert not [n for n in tar.getnames() if n.endswith(("-wal", "-shm"))]  # folded into the copy
        tar.extractall(out)
    copy = sqlite3.connect(out / "library.db")
    assert copy.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert copy.execute("select count(*) from tracks").fetchone()[0] == 500
    assert (out / "settings.json").read_text() == "{}"


# ------------------------------------------------------------------ the stand-in behaves like MA 2.3.0


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin")
    wheel = build_wheel(root / "wheels", "1.0.0")
    venv.create(root / "venv", with_pip=True)
    pip = [str(root / "venv/bin/python"), "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheel)], check=True, timeout=120)
    fake = root / "bin"
    fake.mkdir()
    (fake / "ffmpeg").write_text("#!/bin/sh\necho 'ffmpeg version 7.1.1-1+b1 Copyright (c) the FFmpeg developers'\n")
    (fake / "ffmpeg").chmod(0o755)
    return {"root": root, "wheel": wheel, "pip": pip, "fakebin": fake}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(standin, data_dir: Path, path: str):
    env = {**os.environ, "PATH": path}
    return subprocess.Popen([str(standin["root"] / "venv/bin/mass"), "--config", str(data_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _listening(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def test_standin_without_the_server_extra_dies_on_import(standin, tmp_path):
    proc = _start(standin, tmp_path / "d", "/usr/bin:/bin")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "No module named 'mass_sample_runtime'" in out


def test_standin_runs_with_the_extra_on_loopback_from_settings_and_not_without_ffmpeg(standin, tmp_path):
    subprocess.run([*standin["pip"], "--find-links", str(standin["wheel"].parent), f"{standin['wheel']}[server]"],
                   check=True, timeout=120)
    web, stream = _free_port(), _free_port()
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "settings.json").write_text(json.dumps({"core": {
        "webserver": {"domain": "webserver", "values": {"bind_ip": "127.0.0.1", "bind_port": web}},
        "streams": {"domain": "streams", "values": {"bind_ip": "127.0.0.1", "bind_port": stream}}}}))
    no_ffmpeg = _start(standin, data_dir, "/nonexistent")
    try:
        time.sleep(3)
        assert no_ffmpeg.poll() is None, "MA keeps running (aiorun) when its start fails"
        assert not _listening(web) and not _listening(stream)
    finally:
        no_ffmpeg.terminate()
        log = no_ffmpeg.communicate(timeout=10)[0]
    assert "No such file or directory: 'ffmpeg'" in log
    proc = _start(standin, data_dir, f"{standin['fakebin']}:/usr/bin:/bin")
    try:
        for _ in range(50):
            if _listening(web):
                break
            time.sleep(0.2)
        assert _listening(web) and _listening(stream)
        info = json.loads(subprocess.run(["curl", "-fsS", f"http://127.0.0.1:{web}/info"], capture_output=True,
                                         text=True, check=True).stdout)
        assert info["server_version"] == "1.0.0" and info["server_id"]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    settings = json.loads((data_dir / "settings.json").read_text())
    assert settings["core"]["webserver"]["values"]["bind_port"] == web  # MA keeps what it was given



def test_settings_left_at_mas_default_count_as_set():
    from deploys.music import settings_value_ok

    current = {"core": {"webserver": {"values": {"bind_ip": "127.0.0.1"}}}}
    assert settings_value_ok(current, "webserver", "bind_ip", "127.0.0.1")
    assert settings_value_ok(current, "webserver", "bind_port", 8095)  # MA's default, dropped by its UI
    assert not settings_value_ok(current, "webserver", "bind_port", 8200)
    assert not settings_value_ok(current, "streams", "bind_ip", "127.0.0.1")  # default 0.0.0.0
