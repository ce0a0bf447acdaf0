"""hivesync's backend images as a release series (deploys/parts/hivesync_release.py): the
release id from the content tag, and the record script run for real in a temp dir (a
stand-in `docker` that knows a few images) read back with the Releases fact's own script,
so `make releases` / `make rollback` see what a deploy recorded."""

import json
import os
import subprocess

import pytest

from deploys.errors import ConfigError
from deploys.parts import hivesync_release as hr
from deploys.parts import release_records
from deploys.parts.releases import app_id, rollback_target
from tests.unit.release_state import fake_docker_root, releases_state

FAKE_DOCKER = """#!/bin/sh
# docker image inspect --format '{{.Id}}' NAME|ID: the ids in $IMAGES ("name=id ...")
[ "$1 $2" = "image inspect" ] || exit 2
eval "last=\\${$#}"
for pair in $IMAGES; do
  name=${pair%%=*}; id=${pair#*=}
  if [ "$last" = "$name" ] || [ "$last" = "$id" ]; then echo "$id"; exit 0; fi
done
exit 1
"""


def test_the_content_tag_is_the_release_id_and_a_ready_image_gets_a_digest():
    assert hr.release_rid("hivesync-backend:src-0123456789ab") == "0123456789ab"
    assert hr.release_rid("registry.example:5000/hivesync-backend:src-0123456789ab") == "0123456789ab"
    ready = hr.release_rid("ghcr.io/x/hivesync:1.2")
    assert len(ready) == 12 and ready == hr.release_rid("ghcr.io/x/hivesync:1.2") != hr.release_rid("ghcr.io/x/hivesync:1.3")


def record(root, images, image, action="deploy", backup=None):
    """The record script as the deploy runs it, with the library from templates/."""
    meta = {"image": image, "commit": image[-4:], "by": "t"}
    rid = hr.release_rid(image)
    env = {**os.environ, "PATH": f"{root}/bin:{os.environ['PATH']}", "IMAGES": images}
    script = hr.record_script(str(root), rid, meta, action, backup).replace(release_records.LIB, str(release_records.SOURCE))
    run = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout, rid


def releases(root):
    return releases_state(root, hr.COMPONENT)


@pytest.fixture
def root(tmp_path):
    return fake_docker_root(tmp_path, FAKE_DOCKER)


def test_recorded_releases_are_listed_live_and_chosen_for_a_rollback(root):
    a, b = "hivesync-backend:src-aaaaaaaaaaaa", "hivesync-backend:src-bbbbbbbbbbbb"
    images = f"{a}=sha256:a1 {b}=sha256:b1"
    _, rid_a = record(root, images, a)
    _, rid_b = record(root, images, b, backup="/var/backups/hivesync/hivesync-1.dump")
    st = releases(root)
    assert st["components"]["backend"]["current"] == rid_b
    assert os.readlink(root / "backend") == f"releases/backend/{rid_b}"
    meta = st["components"]["backend"]["releases"][rid_a]["meta"]
    assert meta["image"] == a and meta["image_id"] == "sha256:a1"
    assert [e["action"] for e in st["history"]] == ["deploy", "deploy"]
    assert st["history"][1]["from"] == app_id({"backend": rid_a})
    assert [e["backup"] for e in st["history"]] == [None, "/var/backups/hivesync/hivesync-1.dump"]
    target = rollback_target(st, ["backend"], None)
    assert target["components"] == {"backend": rid_a}
    with pytest.raises(ConfigError, match="no single kept release"):
        rollback_target(st, ["backend"], "nosuch")


def test_a_release_whose_image_is_gone_is_dropped_from_the_kept_ones(root):
    a, b, c = (f"hivesync-backend:src-{x * 12}" for x in "abc")
    record(root, f"{a}=sha256:a1 {b}=sha256:b1", a)
    _, rid_b = record(root, f"{a}=sha256:a1 {b}=sha256:b1", b)
    out, rid_c = record(root, f"{b}=sha256:b1 {c}=sha256:c1", c)  # source_image pruned a
    assert f"pruned backend releases {'a' * 12} (not usable any more)" in out
    assert set(releases(root)["components"]["backend"]["releases"]) == {rid_b, rid_c}
    gone = app_id({"backend": "a" * 12})
    with pytest.raises(ConfigError, match="kept: " + app_id({"backend": rid_b})):
        rollback_target(releases(root), ["backend"], gone)
