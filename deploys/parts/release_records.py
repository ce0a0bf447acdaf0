"""The release records library (templates/opt/infra/lib/release_records.py): one stdlib
module owns the record format (ids, history line), the live link, the listing and the
prune, on the host and here.

`lib` is that file imported on the controller (deploys/parts/releases.py takes its ids,
history lines, prune plan and listing from it); `release_records_installed` puts it on
a host as LIB, where release-switch (music, youtube) and ingestor-release import it and
hivesync runs it (`command`).
"""

from __future__ import annotations

import importlib.util
import shlex

from pyinfra.api import deploy

from deploys.templating import TEMPLATES

LIB_DIR = "/opt/infra/lib"
LIB = f"{LIB_DIR}/release_records.py"
SOURCE = TEMPLATES / LIB.lstrip("/")


def _load():
    spec = importlib.util.spec_from_file_location("release_records", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lib = _load()


def command(*args: str) -> str:
    """A shell command line running the installed library (`release_records.py ARGS`)."""
    return shlex.join(["python3", LIB, *args])


@deploy("Release records library")
def release_records_installed():
    """/opt/infra/lib/release_records.py: root-owned, readable by all (a user-scope switch
    runs as the login user). One operation (its directory made with it): every deploy
    that releases runs it, a no-op apply too; the absent __pycache__ is one more fact, read
    with the others by the prefetch."""
    from pyinfra.operations import files

    files.put(name=LIB, src=str(SOURCE), dest=LIB, user="root", group="root", mode="644", create_remote_dir=True)
    # left by the scripts of earlier versions, which imported the library with bytecode on
    files.directory(name=f"{LIB_DIR}/__pycache__ (none)", path=f"{LIB_DIR}/__pycache__", present=False)
