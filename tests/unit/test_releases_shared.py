"""The release part's shared pieces without a host: hooks carry the operation's `_sudo`,
a rollback puts an older layout's link back as it was, the data-directory backup and
restore of deploys/parts/data_backup.py, the service part's switch hooks, `poll_gate`."""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
import subprocess
from pathlib import Path

from deploys import operations
from deploys.parts import releases
from deploys.parts.data_backup import data_dir_steps
from deploys.parts.releases import Component, Switch
from deploys.parts.service import ServiceSpec, release_hooks
from facts.releases import RELEASES_SCRIPT, Releases


class LocalHost:
    """Enough of pyinfra's Host for hooks and _switch: commands run here (their connector
    arguments are kept), facts through the fact scripts."""

    def __init__(self, root: Path, names: list[str], op_args: dict | None = None):
        self.root, self.names, self.logs, self.calls = root, names, [], []
        self.current_op_global_arguments = op_args

    def run_shell_command(self, command, **kwargs):
        self.calls.append(kwargs)
        out = subprocess.run(["sh", "-c", command.get_raw_value()], capture_output=True, text=True)

        class Output:
            stdout_lines = out.stdout.splitlines()
            stderr_lines = out.stderr.splitlines()

        return out.returncode == 0, Output()

    def get_fact(self, cls, **kwargs):
        out = subprocess.run(["python3", "-c", RELEASES_SCRIPT, "state", str(self.root), " ".join(self.names)],
                             capture_output=True, text=True, check=True)
        return Releases().process(out.stdout.splitlines())

    def log(self, message):
        self.logs.append(message)


def test_hook_commands_run_with_the_operations_sudo(tmp_path):
    host_ = LocalHost(tmp_path, [], {"_sudo": True, "_sudo_user": "root", "_if": None, "_retries": 2})
    ok, out = releases.run_command(host_, "echo hi")
    assert ok and out == "hi"
    assert host_.calls == [{"_sudo": True, "_sudo_user": "root"}]  # connector arguments only
    assert releases.run_command(LocalHost(tmp_path, []), "true")[0]


def test_a_failed_switch_from_an_older_layout_puts_its_link_back_as_it_was(tmp_path):
    old = tmp_path / "releases" / "0123456789ab"  # before the part: releases/<id>, absolute link
    old.mkdir(parents=True)
    new = tmp_path / "releases" / "app" / "new"
    new.mkdir(parents=True)
    (new / ".complete").touch()
    (tmp_path / "app").symlink_to(old)
    host_ = LocalHost(tmp_path, ["app"])
    comp = Component("app", "new", gate=lambda h: (False, "not healthy"))
    assert not releases._switch(None, host_, str(tmp_path), ["app"], [comp], None, Switch(), 3, None)
    assert os.readlink(tmp_path / "app") == str(old)


def _db(path: Path, rows: int) -> None:
    con = sqlite3.connect(path)
    con.execute("create table if not exists t (x)")
    con.execute("delete from t")
    con.executemany("insert into t values (?)", [(i,) for i in range(rows)])
    con.commit()
    con.close()


def _rows(path: Path) -> int:
    return sqlite3.connect(path).execute("select count(*) from t").fetchone()[0]


def test_data_dir_backup_restore_and_the_backup_of_a_rolled_back_release(tmp_path):
    data, backups = tmp_path / "data", tmp_path / "backups"
    data.mkdir()
    _db(data / "library.db", 3)
    (data / "settings.json").write_text(json.dumps({"server_id": "x"}))
    me = pwd.getpwuid(os.getuid()).pw_name
    host_ = LocalHost(tmp_path, [])
    steps = data_dir_steps(str(data), str(backups), keep=2, owner=me)
    assert steps.prepare is None
    ok, first = steps.backup(host_, "rel1")
    assert ok and first.endswith("-rel1.tar.gz") and Path(first).is_file()
    _db(data / "library.db", 7)
    (data / "settings.json").write_text("{}")
    ok, message = steps.restore(host_, first)
    assert ok, message
    assert _rows(data / "library.db") == 3 and json.loads((data / "settings.json").read_text()) == {"server_id": "x"}
    assert _rows(tmp_path / "data.rolled-back" / "library.db") == 7  # kept aside, not deleted
    for tag in ("rel2", "rel3"):
        assert steps.backup(host_, tag)[0]
    assert sorted(p.name.rsplit("-", 1)[-1] for p in backups.glob("data-*.tar.gz")) == ["rel2.tar.gz", "rel3.tar.gz"]
    _db(data / "library.db", 9)
    back = data_dir_steps(str(data), str(backups), keep=2, owner=me, restore_for="rel2")
    ok, message = back.prepare(host_)
    assert ok and "restored from" in message and _rows(data / "library.db") == 3
    ok, message = data_dir_steps(str(data), str(backups), keep=2, owner=me, restore_for="gone").prepare(host_)
    assert ok and "kept as it is" in message
    assert data_dir_steps(str(tmp_path / "none"), str(backups), 2, me).backup(host_, "x") == (True, "")


def test_switch_hooks_clear_the_start_limit_and_record_what_they_started(tmp_path):
    spec = ServiceSpec.from_data({"name": "app", "exec_start": "/bin/true", "user": "app", "working_dir": "/opt/app"})
    stop, start = release_hooks(spec, restart_paths=("/opt/app/current",))
    host_ = LocalHost(tmp_path, [])
    commands = []
    host_.run_shell_command = lambda command, **kw: (commands.append(command.get_raw_value()), (True, type("O", (), {"stdout_lines": [], "stderr_lines": []})))[1]
    stop(host_)
    start(host_)
    assert commands[0] == "systemctl stop app.service"
    assert "reset-failed app.service" in commands[1] and "systemctl restart app.service &&" in commands[1]
    assert "/var/lib/infra/restarts/app.service.inputs" in commands[1] and "/opt/app/current" in commands[1]


def test_poll_gate_is_quiet_in_a_dry_run_and_when_healthy_and_says_why_otherwise(monkeypatch):
    noops = []
    monkeypatch.setattr(operations, "host", type("H", (), {"noop": staticmethod(noops.append)}))
    monkeypatch.setattr(operations, "state", type("S", (), {"is_executing": False}))
    assert operations.poll_gate(lambda: (False, "down"), "http://x", 1, 0.01) is None
    monkeypatch.setattr(operations, "state", type("S", (), {"is_executing": True}))
    assert operations.poll_gate(lambda: (True, "HTTP 200"), "http://x", 1, 0.01) is None
    assert noops == ["http://x: checked when the deploy runs", "http://x: HTTP 200"]
    message = operations.poll_gate(lambda: (False, "refused"), "http://x", 0.05, 0.01)
    assert message == "http://x: not healthy after 0.05s; last observed: refused"
