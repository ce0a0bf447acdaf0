"""deploys/parts/tree_sync.py: a checkout mirrored as one tar, keyed by its content hash.
The host side (TREE_SCRIPT) runs here with python3, as it runs on a host."""

import json
import subprocess
import sys

import pytest

from deploys.parts.tree_sync import TREE_SCRIPT, TreeDigest, parse_digest, read_tree, tree_tar

EXCLUDE = ["*.pyc", "*/.env.*"]
EXCLUDE_DIRS = [".git", "node_modules", "*/node_modules", "data"]


def host_side(*args: str) -> str:
    return subprocess.run([sys.executable, "-c", TREE_SCRIPT, *args], check=True, capture_output=True,
                          text=True).stdout


def spec() -> str:
    return json.dumps({"exclude": EXCLUDE, "exclude_dirs": EXCLUDE_DIRS}, sort_keys=True)


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "checkout"
    for rel, text in {"docker-compose.yml": "services: {}\n", "services/a/main.py": "a = 1\n",
                      "services/a/main.pyc": "x", "infrastructure/env.websocket.template": "HA_URL=\n",
                      "infrastructure/.env.websocket": "HA_TOKEN=secret\n", ".git/HEAD": "ref\n",
                      "services/ui/node_modules/x.js": "1", "data/metadata.db": "db"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    return root


def test_the_tree_is_the_files_the_excludes_leave(checkout):
    tree = read_tree(checkout, EXCLUDE, EXCLUDE_DIRS)
    assert tree.files == ["docker-compose.yml", "infrastructure/env.websocket.template", "run.sh", "services/a/main.py"]


def test_the_host_copy_hashes_like_the_local_tree_and_keeps_what_the_excludes_match(checkout, tmp_path):
    tree = read_tree(checkout, EXCLUDE, EXCLUDE_DIRS)
    dest = tmp_path / "host/src"
    assert parse_digest(host_side("digest", str(dest), spec()).splitlines()) is None  # absent
    (dest / "infrastructure").mkdir(parents=True)
    (dest / "infrastructure/.env.websocket").write_text("HA_TOKEN=on-the-host\n")  # written by the deploy
    (dest / "stale.py").write_text("gone upstream\n")
    (dest / "data").mkdir()
    (dest / "data/metadata.db").write_text("host data\n")
    upload = tmp_path / "up.tar.gz"
    upload.write_bytes(tree_tar(tree))
    out = host_side("apply", str(dest), spec(), str(upload))
    assert "4 files written, 1 removed" in out, out
    assert not upload.exists() and not (dest / "stale.py").exists()
    assert (dest / "infrastructure/.env.websocket").read_text() == "HA_TOKEN=on-the-host\n"
    assert (dest / "data/metadata.db").read_text() == "host data\n"
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "services/a/main.py").stat().st_mode & 0o777 == 0o644
    assert parse_digest(host_side("digest", str(dest), spec()).splitlines()) == tree.digest
    # unchanged files are not rewritten; a host edit changes the digest
    upload.write_bytes(tree_tar(tree))
    assert "0 files written, 0 removed" in host_side("apply", str(dest), spec(), str(upload))
    (dest / "services/a/main.py").write_text("edited on the host\n")
    assert parse_digest(host_side("digest", str(dest), spec()).splitlines()) != tree.digest


def test_the_digest_follows_content_names_and_the_exec_bit(checkout):
    first = read_tree(checkout, EXCLUDE, EXCLUDE_DIRS).digest
    (checkout / "services/a/main.pyc").write_text("ignored")
    assert read_tree(checkout, EXCLUDE, EXCLUDE_DIRS).digest == first
    (checkout / "run.sh").chmod(0o644)
    second = read_tree(checkout, EXCLUDE, EXCLUDE_DIRS).digest
    assert second != first
    (checkout / "services/a/main.py").rename(checkout / "services/a/app.py")
    assert read_tree(checkout, EXCLUDE, EXCLUDE_DIRS).digest not in (first, second)


def test_digest_fact_parses_captured_output():
    assert parse_digest(["tree-digest " + "ab" * 32]) == "ab" * 32
    assert parse_digest(["tree-digest absent"]) is None
    assert parse_digest([]) is None
    assert parse_digest(["python3: not found"]) is None
    command = str(TreeDigest().command("/opt/x y/src", spec()))
    assert command.startswith("python3 -c ") and "'/opt/x y/src'" in command and " digest " in command


def test_a_real_sized_checkout_goes_up_as_one_small_gzipped_tar(tmp_path):
    root = tmp_path / "big"
    for i in range(1500):
        (root / f"d{i % 40}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 40}/f{i}.py").write_text("x = %d\n" % i)
    tree = read_tree(root)
    assert len(tree.files) == 1500 and len(tree_tar(tree)) < 200_000


class FakeHost:
    def __init__(self, digest):
        self.digest, self.noops = digest, []

    def get_fact(self, fact, **kwargs):
        assert fact is TreeDigest and set(kwargs) == {"path", "spec"}
        return self.digest

    def noop(self, message):
        self.noops.append(message)


def test_the_operation_sends_nothing_when_the_host_copy_matches(checkout, monkeypatch):
    from pyinfra.api import FileUploadCommand

    from deploys.parts import tree_sync as part

    tree = read_tree(checkout, EXCLUDE, EXCLUDE_DIRS)
    same = FakeHost(tree.digest)
    monkeypatch.setattr(part, "host", same)
    assert list(part.tree_sync._inner(tree=tree, dest="/opt/app/src")) == []
    assert same.noops == [f"/opt/app/src is up to date (4 files, {tree.digest[:12]})"]
    monkeypatch.setattr(part, "host", FakeHost("0" * 64))
    mkdir, upload, unpack = part.tree_sync._inner(tree=tree, dest="/opt/app/src")
    assert str(mkdir.get_raw_value()) == "mkdir -p /opt/app/src"
    assert isinstance(upload, FileUploadCommand) and upload.dest == f"/opt/app/src.tree-{tree.digest[:12]}.tar.gz"
    text = str(unpack.get_raw_value())
    assert text.startswith("python3 -c ") and " apply /opt/app/src " in text and text.endswith(upload.dest)
