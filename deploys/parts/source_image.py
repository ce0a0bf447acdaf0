"""An app's image built ON the host from the operator's checkout, tagged by content.

    source = read_source(Path("../app"), ref=None)          # prepare time, local
    tag = content_tag("app-backend", source, "Dockerfile", {"X": "1"})
    source_image(name=..., source=source, tag=tag, repository="app-backend", ...)

Why: the image is in no registry. The checkout (its git-tracked and untracked-but-not-
ignored files; or `git archive <ref>` of the repository when a ref is given; or every
file of a plain directory) is hashed here with the Dockerfile path and the build args;
the tag is `<repository>:src-<hash12>`. When the host already has that tag nothing is
sent and nothing runs (0 changes). Otherwise the source goes up as one tar, and
`docker build` runs as the transient unit `<unit>.service` (deploys/parts/host_steps.py:
an SSH drop does not orphan it; its output streams to the journal and, followed, to
pyinfra as it builds), or in the foreground with `unit=None` (the operator's machine),
unpacks into `<directory>/source` (the synced checkout) only after a good build, and
prunes this repository's `src-*` tags beyond `keep` (newest first; an image a container
still uses is never removed), so the previous image stays for a rollback. A failed build changes no tag: the running release keeps serving.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation

from deploys.errors import ConfigError
from deploys.parts.host_steps import host_step
from facts.source_image import RepositoryImages

SKIP_DIRS = {".git", "__pycache__", ".venv", "node_modules", ".mypy_cache", ".pytest_cache"}


@dataclass
class Source:
    """A checkout's files (relative path -> (bytes, executable)) and where they came from."""

    root: Path
    files: dict[str, tuple[bytes, bool]] = field(default_factory=dict)
    commit: str | None = None  # the git commit, None for a plain directory
    dirty: bool = False  # a git work tree with uncommitted changes
    ref: str | None = None

    def describe(self) -> str:
        if self.commit is None:
            return f"{self.root} (not a git checkout)"
        return self.commit + ("+dirty" if self.dirty else "") + (f" (ref {self.ref})" if self.ref else "")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=120)


def read_source(root: Path, ref: str | None = None) -> Source:
    """The files a build of `root` (at `ref`, when given) sees; ConfigError when unreadable."""
    if not root.is_dir():
        raise ConfigError(f"no source checkout at {root}")
    if ref:
        sha = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if sha.returncode != 0:
            raise ConfigError(f"{root}: git ref {ref!r} is not a commit of that repository")
        commit = sha.stdout.decode().strip()
        archive = _git(root, "archive", "--format=tar", commit)
        if archive.returncode != 0:
            raise ConfigError(f"{root}: git archive {ref} failed: {archive.stderr.decode().strip()[:300]}")
        source = Source(root, commit=commit, ref=ref)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    source.files[member.name] = (tar.extractfile(member).read(), bool(member.mode & 0o111))
        return source
    listing = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listing.returncode == 0:
        head = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--", ".")
        source = Source(root, commit=head.stdout.decode().strip() or None if head.returncode == 0 else None,
                        dirty=bool(status.stdout.strip()))
        names = sorted({n for n in listing.stdout.decode().split("\0") if n})
    else:
        source = Source(root)
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.is_file() and not SKIP_DIRS & set(p.relative_to(root).parts))
    for name in names:
        path = root / name
        if path.is_file() and not path.is_symlink():  # a deleted tracked file is not in the build
            source.files[name] = (path.read_bytes(), bool(path.stat().st_mode & 0o111))
    return source


def content_hash(source: Source, dockerfile: str, build_args: dict) -> str:
    """What the image is made of: every file (path, exec bit, content), the Dockerfile
    path and the build args. The commit is not in it: the same content is the same image."""
    digest = hashlib.sha256(f"dockerfile\0{dockerfile}\0".encode())
    for key in sorted(build_args):
        digest.update(f"arg\0{key}={build_args[key]}\0".encode())
    for name in sorted(source.files):
        content, executable = source.files[name]
        digest.update(f"file\0{name}\0{int(executable)}\0".encode() + hashlib.sha256(content).digest())
    return digest.hexdigest()


def content_tag(repository: str, source: Source, dockerfile: str, build_args: dict) -> str:
    return f"{repository}:src-{content_hash(source, dockerfile, build_args)[:12]}"


def source_tar(source: Source) -> bytes:
    """The files as one tar, byte-for-byte the same for the same content (mtime 0, root)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(source.files):
            content, executable = source.files[name]
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o755 if executable else 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


# $1 tar, $2 directory, $3 tag, $4 repository, $5 keep, $6 dockerfile, $7.. labels and
# build args as `docker build` words.
_BUILD = r"""
set -eu
tar="$1"; dir="$2"; tag="$3"; repository="$4"; keep="$5"; dockerfile="$6"; shift 6
if docker image inspect "$tag" >/dev/null 2>&1; then  # built by an earlier, cut-off run
    echo "$tag is already built"; rm -f "$tar"; exit 0
fi
rm -rf "$dir/source.new"; mkdir -p "$dir/source.new"
tar -xf "$tar" -C "$dir/source.new"
if [ ! -f "$dir/source.new/$dockerfile" ]; then echo "the source has no $dockerfile" >&2; rm -rf "$dir/source.new" "$tar"; exit 1; fi
echo "docker build of $tag from the synced source"
docker build --pull=false --force-rm -f "$dir/source.new/$dockerfile" -t "$tag" "$@" "$dir/source.new" 2>&1 || true
status=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
if [ -z "$status" ]; then echo "docker build of $tag failed" >&2; rm -rf "$dir/source.new" "$tar"; exit 1; fi
rm -rf "$dir/source.old"; [ ! -d "$dir/source" ] || mv "$dir/source" "$dir/source.old"
mv "$dir/source.new" "$dir/source"; rm -rf "$dir/source.old" "$tar"
used=$(docker ps -a --format '{{.Image}}')
docker image ls "$repository" --format '{{.Tag}}' | grep '^src-' | tail -n +"$((keep + 1))" | while read -r old; do
    if printf '%s\n' "$used" | grep -qx "$repository:$old"; then continue; fi
    docker rmi "$repository:$old" >/dev/null 2>&1 && echo "pruned $repository:$old" || true
done
echo "built $tag ($(echo "$status" | cut -c1-19))"
""".strip()


@operation()
def source_image(source: Source, tag: str, repository: str, directory: str, dockerfile: str = "Dockerfile",
                 build_args: dict | None = None, keep: int = 3, unit: str | None = "image-build",
                 timeout_s: int = 3600):
    """`tag` exists on the host, built there from `source` (see module doc). `unit` None:
    the build runs in the foreground of the session (a user's own machine, no root)."""
    for word in [tag, directory, dockerfile, *(build_args or {}).values()]:
        if "$" in str(word) or "%" in str(word):
            raise ConfigError(f"source_image {repository}: {word!r}: no '$' or '%' (systemd would expand them)")
    if int(keep) < 2:
        raise ConfigError(f"source_image {repository}: keep must be at least 2 (the previous image is the rollback)")
    images = host.get_fact(RepositoryImages, repository=repository) or []
    if any(f"{repository}:{i['tag']}" == tag for i in images):
        host.noop(f"{tag} is built (source {source.describe()})")
        return
    upload = f"{directory}/.source-{tag.rsplit('-', 1)[1]}.tar"
    script = f"{directory}/.image-build.sh"  # a file: systemd would expand `$` in an ExecStart argument
    words = ["--label", f"infra.source.commit={source.describe()}", "--label", f"infra.source.tag={tag}"]
    for key in sorted(build_args or {}):
        words += ["--build-arg", f"{key}={(build_args or {})[key]}"]
    yield StringCommand("mkdir", "-p", QuoteString(directory))
    yield FileUploadCommand(io.BytesIO(source_tar(source)), upload)
    yield FileUploadCommand(io.BytesIO(_BUILD.encode() + b"\n"), script)
    argv = ["sh", script, upload, directory, tag, repository, str(int(keep)), dockerfile, *words]
    if unit is None:  # the operator's own machine (no root, maybe no systemd): in the foreground
        yield StringCommand(*[QuoteString(a) for a in argv])
        return
    # the journal streamed while it builds: progress, and a failure's cause in full
    yield host_step(unit, argv, f"docker build {tag}", timeout_s=timeout_s, follow=True)
