"""facts.ingestor.BuildBases: one `docker image inspect` of every image and base, the same
answer (ids and source labels) as one inspect per image (ImageSources + the old BuildBases)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from facts.ingestor import BuildBases, ImageSources

# a fake `docker image inspect --format F NAME...`: the images below, in argument order;
# a missing one -> "Error: No such image" on stderr and exit 1, as the real CLI
FAKE_DOCKER = r"""#!/usr/bin/env python3
import json, os, sys
images = json.loads(os.environ["FAKE_IMAGES"])
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
names, status = sys.argv[5:], 0
for name in names:
    if name not in images:
        print("Error: No such image: " + name, file=sys.stderr); status = 1; continue
    image_id, labels = images[name]
    fmt = sys.argv[4]
    label = labels.get("ingestor.source", "<no value>") if labels is not None else "<no value>"
    print(fmt.replace("{{.Id}}", image_id).replace('{{index .Config.Labels "ingestor.source"}}', label))
sys.exit(status)
"""

IMAGES = {
    "app-a:latest": ["sha256:aaa", {"ingestor.source": "digest-a"}],
    "app-b:latest": ["sha256:bbb", {}],
    "python:3.12-slim": ["sha256:ppp", None],
}


@pytest.fixture
def run_fact(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.replace("/usr/bin/env python3", sys.executable))
    docker.chmod(0o755)
    calls = tmp_path / "calls"

    def run(images, refs, builds=None):
        builds_path = tmp_path / "builds.json"
        if builds is not None:
            builds_path.write_text(json.dumps(builds))
        command = BuildBases().command(str(builds_path), images, refs).get_raw_value()
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_IMAGES": json.dumps(IMAGES),
               "FAKE_CALLS": str(calls)}
        calls.write_text("")
        out = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, check=True).stdout
        return BuildBases().process(out.splitlines()), [json.loads(line) for line in calls.read_text().splitlines()]

    return run


def test_all_images_present_are_inspected_in_one_docker_call(run_fact):
    state, calls = run_fact(["app-a:latest", "app-b:latest"], ["python:3.12-slim"], builds={"sha256:aaa": {}})
    assert state == {
        "builds": {"sha256:aaa": {}},
        "ids": {"app-a:latest": "sha256:aaa", "app-b:latest": "sha256:bbb", "python:3.12-slim": "sha256:ppp"},
        "labels": {"app-a:latest": "digest-a", "app-b:latest": None, "python:3.12-slim": None},
    }
    assert len(calls) == 1 and calls[0][4:] == ["app-a:latest", "app-b:latest", "python:3.12-slim"]


def test_a_missing_image_falls_back_to_one_call_per_image_with_the_same_answer(run_fact):
    state, calls = run_fact(["app-a:latest", "gone:latest"], ["python:3.12-slim"])
    assert state == {
        "builds": {},
        "ids": {"app-a:latest": "sha256:aaa", "gone:latest": None, "python:3.12-slim": "sha256:ppp"},
        "labels": {"app-a:latest": "digest-a", "gone:latest": None, "python:3.12-slim": None},
    }
    assert len(calls) == 4  # the joint call failed, then one per name


def test_labels_mean_what_image_sources_says():
    """The label part follows ImageSources' parsing of the same inspect output."""
    assert ImageSources().process(["a|digest-a", "b|", "c|<no value>", "d|-"]) == {
        "a": "digest-a", "b": None, "c": None, "d": None}


def test_nothing_to_inspect_and_the_default_have_every_key(run_fact):
    state, calls = run_fact([], [])
    assert state == {"builds": {}, "ids": {}, "labels": {}} == BuildBases.default()
    assert calls == []
