"""Consistent backups of an app's data taken before a release switch, and their restore:
the `DataSteps` of deploys/parts/releases.py for apps whose data is SQLite files (plus
plain files such as settings.json).

- `data_dir_steps`: a whole data directory as one tar.gz. SQLite files go through
  SQLite's backup API (a tar of a database being written can be torn, and GNU tar fails
  on a file that changes while it is read); their -wal/-shm/-journal files are folded in
  by that API. A restore puts the previous contents aside (`<dir>.rolled-back`), never
  deletes them.
- `sqlite_backup` / `sqlite_restore`: one database file, copied with the same API (an
  app whose migrations decide what to restore, like youtube's Alembic, builds its own
  DataSteps from them).

Backups are named `<prefix>-<stamp>-<tag>.<ext>`, tag = the release live when it was
taken, so a rollback to that release finds the data it ran with (`restore_for`).
"""

from __future__ import annotations

import shlex
import time

from deploys.parts.releases import DataSteps, HostData, run_command

q = shlex.quote

# python3 -c SCRIPT DATA_DIR ARCHIVE: a consistent tar.gz of a live data dir, renamed
# into place when complete.
DIR_SNAPSHOT_SCRIPT = r"""
import os, shutil, sqlite3, sys, tarfile, tempfile
data, archive = sys.argv[1], sys.argv[2]
stage = tempfile.mkdtemp(prefix=".stage-", dir=os.path.dirname(archive))
try:
    for root, dirs, files in os.walk(data):
        rel = os.path.relpath(root, data)
        os.makedirs(os.path.join(stage, rel), exist_ok=True)
        for name in files:
            src, dst = os.path.join(root, name), os.path.join(stage, rel, name)
            if name.endswith(("-wal", "-shm", "-journal")):
                continue
            with open(src, "rb") as fh:
                head = fh.read(16)
            if head == b"SQLite format 3\0":
                source, target = sqlite3.connect(src, timeout=30), sqlite3.connect(dst)
                source.backup(target)
                target.close(); source.close()
            else:
                shutil.copy2(src, dst)
    with tarfile.open(archive + ".part", "w:gz") as tar:
        tar.add(stage, arcname=".")
    os.replace(archive + ".part", archive)
finally:
    shutil.rmtree(stage, ignore_errors=True)
"""

# python3 -c SCRIPT SRC DEST: a consistent SQLite copy (online backup API), never the live file.
SQLITE_COPY_SCRIPT = (
    "import sqlite3, sys; s = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True); "
    "d = sqlite3.connect(sys.argv[2]); s.backup(d); d.close(); s.close()"
)


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")


def sqlite_copy_command(db: str, dest: str) -> str:
    return f"umask 077 && python3 -c {q(SQLITE_COPY_SCRIPT)} {q(db)} {q(dest)}"


def sqlite_backup(host_, db: str, backups: str, tag: str, keep: int) -> tuple[bool, str]:
    """`backups/<stem>-<stamp>-<tag>.db`, a consistent copy of `db` (the `keep` newest
    kept); (True, "") when there is no database yet."""
    stem = db.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    dest = f"{backups}/{stem}-{stamp()}-{tag}.db"
    ok, out = run_command(host_, (
        f"[ -f {q(db)} ] || {{ echo none; exit 0; }}; mkdir -p {q(backups)} && chmod 700 {q(backups)} && "
        f"{sqlite_copy_command(db, dest)} && {prune_command(backups, q(stem) + '-*.db', keep)} && echo {q(dest)}"
    ), lines=30)
    if not ok:
        return False, out
    return True, "" if out.strip().endswith("none") else dest


def sqlite_restore(host_, db: str, backup: str) -> tuple[bool, str]:
    """Put `backup` in place of `db` (its -journal/-wal/-shm files dropped), atomically."""
    return run_command(host_, (
        f"rm -f {q(db)}-journal {q(db)}-wal {q(db)}-shm && cp -p {q(backup)} {q(db)}.restore && mv -f {q(db)}.restore {q(db)}"
    ), lines=30)


def newest_backup(host_, backups: str, pattern: str) -> str | None:
    """The newest file in `backups` matching the shell glob `pattern`, or None."""
    ok, found = run_command(host_, f"ls -1t {q(backups)}/{pattern} 2>/dev/null | head -n 1")
    return found.strip() or None if ok else None


def prune_command(backups: str, pattern: str, keep: int) -> str:
    """Keep the `keep` newest files matching `pattern` (a shell glob) in `backups`."""
    return f"{{ ls -1t {q(backups)}/{pattern} 2>/dev/null | tail -n +{int(keep) + 1} | xargs -r rm -f; }}"


def data_dir_steps(data_dir: str, backups: str, keep: int, owner: str, restore_for: str | None = None,
                   prefix: str = "data") -> DataSteps:
    """DataSteps for `data_dir`: a backup before every switch (the `keep` newest kept), a
    restore for a failed switch, and with `restore_for` (a rollback to that release) the
    newest backup taken while it was live, put back before it starts."""

    def backup(host_, tag: str):
        archive = f"{backups}/{prefix}-{stamp()}-{tag}.tar.gz"
        ok, out = run_command(host_, dir_backup_command(data_dir, backups, keep, prefix, q(archive)))
        if not ok:
            return False, out
        return True, "" if out.strip().endswith("none") else archive

    def restore(host_, archive: str):
        ok, out = run_command(host_, dir_restore_command(data_dir, owner, q(archive)))
        return ok, (f"{data_dir} restored from {archive} (what it held is in {data_dir}.rolled-back)" if ok else out)

    def matching_backup(host_):
        found = newest_backup(host_, backups, f"{q(prefix)}-*-{q(restore_for)}.tar.gz")
        if not found:
            return True, f"no backup of {data_dir} from when {restore_for} was live: the data is kept as it is"
        return restore(host_, found)

    return DataSteps(backup=backup, restore=restore, prepare=matching_backup if restore_for else None)


def dir_backup_command(data_dir: str, backups: str, keep: int, prefix: str, archive: str) -> str:
    """Back up `data_dir` to `archive` (a shell word, evaluated once); prints its path, or
    "none" when there is no data dir yet."""
    return (
        f"archive={archive}; [ -d {q(data_dir)} ] || {{ echo none; exit 0; }}; "
        f"mkdir -p {q(backups)} && chmod 700 {q(backups)} && "
        f'python3 -c {q(DIR_SNAPSHOT_SCRIPT)} {q(data_dir)} "$archive" && '
        f"{prune_command(backups, q(prefix) + '-*.tar.gz', keep)} && echo \"$archive\""
    )


def dir_restore_command(data_dir: str, owner: str, archive: str) -> str:
    """Put `archive` (a shell word) in place of `data_dir`; what it held goes aside."""
    restoring, aside = q(f"{data_dir}.restoring"), q(f"{data_dir}.rolled-back")
    return (
        f"rm -rf {restoring} {aside} && mkdir -p {restoring} && tar -C {restoring} -xzf {archive} && "
        f"chown -R {q(f'{owner}:{owner}')} {restoring} && chmod 750 {restoring} && "
        f"{{ [ ! -e {q(data_dir)} ] || mv {q(data_dir)} {aside}; }} && mv {restoring} {q(data_dir)}"
    )


def data_dir_host_steps(data_dir: str, backups: str, keep: int, owner: str, restore_for: str | None = None,
                        prefix: str = "data") -> HostData:
    """`data_dir_steps` as command lines for the host-side switch (release-switch): the
    backup is tagged with $RELEASE_TAG, a restore puts back $RELEASE_BACKUP, and with
    `restore_for` the newest backup taken while that release was live comes back."""
    archive = q(f"{backups}/{prefix}-") + '"$(date +%Y%m%dT%H%M%S)-$RELEASE_TAG.tar.gz"'
    prepare = ""
    if restore_for:
        found = f"{q(backups)}/{q(prefix)}-*-{q(restore_for)}.tar.gz"
        prepare = (
            f'found=$(ls -1t {found} 2>/dev/null | head -n 1); if [ -z "$found" ]; then '
            f"echo {q(f'no backup of {data_dir} from when {restore_for} was live: the data is kept as it is')}; "
            f'else {dir_restore_command(data_dir, owner, chr(34) + "$found" + chr(34))} && '
            f'echo {q(data_dir)}" restored from $found (what it held is in "{q(data_dir + ".rolled-back")}")"; fi'
        )
    return HostData(backup=dir_backup_command(data_dir, backups, keep, prefix, archive),
                    restore=dir_restore_command(data_dir, owner, '"$RELEASE_BACKUP"'), prepare=prepare)
