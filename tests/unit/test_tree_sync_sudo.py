"""deploys/parts/tree_sync.py for a non-root SSH user with `_sudo=True`: pyinfra wraps every
command as `sudo -H -n sh -c '<command>'`; the digest fact and the unpack, wrapped that way,
must reach python3 intact (TREE_SCRIPT is quoted twice then). Each wrapped command runs
here through a stand-in `sudo` that only drops its options, as sudo hands the rest to sh.
(The tar itself goes up through pyinfra's own sudo upload: a temp file, then `sudo cp`.)"""

import shlex
import subprocess

import pytest
from pyinfra.api import FileUploadCommand
from pyinfra.connectors.util import make_unix_command

from deploys.parts import tree_sync as part
from deploys.parts.tree_sync import TreeDigest, parse_digest, read_tree, tree_tar
from tests.unit.test_tree_sync import EXCLUDE, EXCLUDE_DIRS, FakeHost, checkout  # noqa: F401


@pytest.fixture
def fake_sudo(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sudo = bin_dir / "sudo"
    sudo.write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    sudo.chmod(0o755)
    return bin_dir


def as_sudo(command, bin_dir) -> str:
    wrapped = str(make_unix_command(command, _sudo=True).get_raw_value())
    assert wrapped.startswith("sudo -H -n sh -c "), wrapped
    proc = subprocess.run(wrapped, shell=True, capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_digest_fact_and_the_unpack_survive_sudos_wrapping(checkout, fake_sudo, tmp_path, monkeypatch):  # noqa: F811
    tree = read_tree(checkout, EXCLUDE, EXCLUDE_DIRS)
    dest = tmp_path / "o p" / "src"  # a space: the quoting must hold inside sh -c '...'
    fact = TreeDigest().command(path=str(dest), spec=tree.spec())
    assert parse_digest(as_sudo(fact, fake_sudo).splitlines()) is None  # absent
    monkeypatch.setattr(part, "host", FakeHost(None))
    mkdir, upload, unpack = part.tree_sync._inner(tree=tree, dest=str(dest))
    as_sudo(mkdir, fake_sudo)
    assert isinstance(upload, FileUploadCommand)
    (tmp_path / "o p" / upload.dest.rsplit("/", 1)[1]).write_bytes(tree_tar(tree))  # what `sudo cp` puts there
    out = as_sudo(unpack, fake_sudo)
    assert f"{dest}: {len(tree.files)} files written, 0 removed (digest {tree.digest[:12]})" in out, out
    assert parse_digest(as_sudo(fact, fake_sudo).splitlines()) == tree.digest
    assert not (tmp_path / "o p" / upload.dest.rsplit("/", 1)[1]).exists()


def test_sudo_to_another_user_quotes_the_user_and_keeps_the_script_whole():
    command = TreeDigest().command(path="/opt/app/src", spec='{"exclude": ["*.pyc"]}')
    wrapped = str(make_unix_command(command, _sudo=True, _sudo_user="app").get_raw_value())
    argv = shlex.split(wrapped)
    assert argv[:7] == ["sudo", "-H", "-n", "-u", "app", "sh", "-c"] and len(argv) == 8
    inner = shlex.split(argv[7])
    assert inner[:2] == ["python3", "-c"] and inner[2] == part.TREE_SCRIPT
    assert inner[3:] == ["digest", "/opt/app/src", '{"exclude": ["*.pyc"]}']
