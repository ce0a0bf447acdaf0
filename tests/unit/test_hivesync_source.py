"""deploys/parts/source_image.py (+ facts/source_image.py) and how deploys/hivesync.py uses
it: the backend image built on the host from a checkout, tagged by content."""

import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from deploys.parts import hivesync_config, hivesync_stack
from deploys.errors import ConfigError
from deploys.parts.source_image import content_tag, read_source, source_tar
from facts.source_image import RepositoryImages, parse_images
from tests.unit.test_hivesync_deploy import data


def git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin", "HOME": str(root)}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "hivesync"
    (root / "backend/app").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY backend ./backend\n")
    (root / "backend/app/main.py").write_text("app = 1\n")
    (root / ".gitignore").write_text("*.pyc\n.env\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    return root


def test_a_git_checkout_is_its_tracked_and_unignored_files(checkout):
    (checkout / "backend/app/main.pyc").write_bytes(b"\0")
    (checkout / ".env").write_text("SECRET=1\n")
    (checkout / "new.txt").write_text("untracked but not ignored\n")
    source = read_source(checkout)
    assert sorted(source.files) == [".gitignore", "Dockerfile", "backend/app/main.py", "new.txt"]
    assert source.commit == git(checkout, "rev-parse", "HEAD") and source.dirty


def test_a_ref_is_git_archive_of_that_commit(checkout):
    first = git(checkout, "rev-parse", "HEAD")
    (checkout / "backend/app/main.py").write_text("app = 2\n")
    git(checkout, "commit", "-qam", "two")
    old = read_source(checkout, ref=first)
    assert old.commit == first and old.ref == first and not old.dirty
    assert old.files["backend/app/main.py"][0] == b"app = 1\n"
    with pytest.raises(ConfigError, match="is not a commit"):
        read_source(checkout, ref="nosuch")
    with pytest.raises(ConfigError, match="no source checkout"):
        read_source(checkout / "missing")


def test_the_tag_follows_content_dockerfile_and_build_args_not_the_commit(checkout):
    tag = content_tag("hivesync-backend", read_source(checkout), "Dockerfile", {})
    assert tag.startswith("hivesync-backend:src-") and len(tag.rsplit("-", 1)[1]) == 12
    git(checkout, "commit", "-q", "--allow-empty", "-m", "empty")  # a new commit, same files
    assert content_tag("hivesync-backend", read_source(checkout), "Dockerfile", {}) == tag
    assert content_tag("hivesync-backend", read_source(checkout), "Dockerfile", {"X": "1"}) != tag
    assert content_tag("hivesync-backend", read_source(checkout), "docker/Dockerfile", {}) != tag
    (checkout / "backend/app/main.py").write_text("app = 3\n")
    assert content_tag("hivesync-backend", read_source(checkout), "Dockerfile", {}) != tag
    (checkout / "backend/app/main.py").chmod(0o755)
    assert content_tag("hivesync-backend", read_source(checkout), "Dockerfile", {}) != \
        content_tag("hivesync-backend", read_source(checkout, ref="HEAD"), "Dockerfile", {})


def test_a_plain_directory_skips_vcs_and_caches(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git/config").write_text("x")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules/a.js").write_text("x")
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    source = read_source(tmp_path)
    assert list(source.files) == ["Dockerfile"] and source.commit is None


def test_the_tar_is_the_same_bytes_for_the_same_content(checkout):
    source = read_source(checkout)
    assert source_tar(source) == source_tar(read_source(checkout))
    with tarfile.open(fileobj=BytesIO(source_tar(source))) as tar:
        assert {m.name: (m.mtime, m.uid) for m in tar.getmembers()}["Dockerfile"] == (0, 0)


def test_images_fact_parses_docker_image_ls_and_tells_docker_down():
    out = ["images:", "src-aaa sha1 2026-12-01 10:00:00 +0000 UTC", "<none> sha2 2026-11-30", ""]
    assert [i["tag"] for i in parse_images(out)] == ["src-aaa"]
    assert parse_images([]) is None
    assert "docker image ls hivesync-backend" in RepositoryImages().command(repository="hivesync-backend")


def test_the_deploy_builds_from_the_source_unless_a_ready_image_is_named(checkout):
    d = data(hivesync_backend_image=None, hivesync_backend_source=str(checkout))
    tag = hivesync_stack.backend_image(d)
    assert tag.startswith("hivesync-backend:src-")
    assert f'image: "{tag}"' in hivesync_stack.render_compose(d)
    record = hivesync_stack.deployed_record(d)
    assert f"image {tag}\n" in record and f"commit {git(checkout, 'rev-parse', 'HEAD')}\n" in record
    ready = data(hivesync_backend_image="registry.example/hivesync:1", hivesync_backend_source=str(checkout))
    assert hivesync_stack.backend_image(ready) == "registry.example/hivesync:1" and hivesync_stack.backend_source(ready) is None


def test_build_knobs_are_checked_together():
    problems = hivesync_config.config_problems(data(hivesync_backend_image=None, hivesync_backend_source=None,
                                             hivesync_backend_keep_images=1,
                                             hivesync_backend_build_args={"BASE": "$(reboot)"}))
    text = "; ".join(problems)
    assert "neither hivesync_backend_source" in text and "keep at least 2" in text and "BASE=" in text


FAKE_DOCKER = r"""#!/bin/sh
# fake docker: tags in $STATE (newest first), calls logged to $STATE.log
echo "$*" >> "$STATE.log"
case "$1 $2" in
  "build --pull=false") tag=$(echo "$*" | sed 's/.* -t \([^ ]*\) .*/\1/'); [ -n "$FAIL" ] && exit 1
      { echo "${tag#*:}"; cat "$STATE"; } > "$STATE.new"; mv "$STATE.new" "$STATE" ;;
  "image inspect") eval last=\${$#}; grep -qx "${last#*:}" "$STATE" && echo sha256:0123456789abcdef0123 ;;
  "image ls") cat "$STATE" ;;
  "ps -a") echo "hivesync-backend:src-bbb" ;;
  "rmi hivesync-backend:src-"*) grep -vx "${2#*:}" "$STATE" > "$STATE.new"; mv "$STATE.new" "$STATE" ;;
esac
"""


def run_build(tmp_path, tags, fail=False):
    from deploys.parts.source_image import _BUILD
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    state = tmp_path / "tags"
    state.write_text("".join(t + "\n" for t in tags))
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src/Dockerfile").write_text("FROM x\n")
    subprocess.run(["tar", "-cf", str(tmp_path / "s.tar"), "-C", str(tmp_path / "src"), "."], check=True)
    script = tmp_path / "build.sh"
    script.write_text(_BUILD)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STATE": str(state), **({"FAIL": "1"} if fail else {})}
    done = subprocess.run(["sh", str(script), str(tmp_path / "s.tar"), str(tmp_path / "dir"), "hivesync-backend:src-new",
                           "hivesync-backend", "3", "Dockerfile", "--build-arg", "BASE=x"],
                          capture_output=True, text=True, env=env)
    return done, state.read_text().split()


def test_host_build_keeps_the_newest_and_any_image_in_use(tmp_path):
    done, tags = run_build(tmp_path, ["src-ccc", "src-ddd", "src-aaa", "src-bbb"])
    assert done.returncode == 0, done.stderr
    # newest first: new, ccc, ddd kept (3); aaa pruned; bbb beyond 3 but a container uses it
    assert tags == ["src-new", "src-ccc", "src-ddd", "src-bbb"]
    assert "pruned hivesync-backend:src-aaa" in done.stdout
    assert (tmp_path / "dir/source/Dockerfile").exists() and not (tmp_path / "s.tar").exists()


def test_a_failed_host_build_keeps_the_synced_source_and_every_tag(tmp_path):
    (tmp_path / "dir/source").mkdir(parents=True)
    (tmp_path / "dir/source/OLD").write_text("previous sync")
    done, tags = run_build(tmp_path, ["src-ccc", "src-bbb"], fail=True)
    assert done.returncode == 1 and "docker build of hivesync-backend:src-new failed" in done.stderr
    assert tags == ["src-ccc", "src-bbb"] and (tmp_path / "dir/source/OLD").exists()


def test_a_build_already_done_by_a_cut_off_run_is_not_repeated(tmp_path):
    """The earlier run (its apply cut off) built the tag: the re-run only drops its upload."""
    done, tags = run_build(tmp_path, ["src-new", "src-ccc"])
    assert done.returncode == 0, done.stderr
    assert "hivesync-backend:src-new is already built" in done.stdout
    assert tags == ["src-new", "src-ccc"] and not (tmp_path / "s.tar").exists()
    assert not any(line.startswith("build ") for line in (tmp_path / "tags.log").read_text().splitlines())
