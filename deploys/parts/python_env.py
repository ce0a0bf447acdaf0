"""Python virtual environments built on the host for a release.

Venvs are not relocatable (their scripts name the interpreter by absolute path), so a
venv is built where it will run: inside the release directory (`release_build_steps`), or
at a path shared by every release with the same requirements (`venv_built`).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, StringCommand, operation

from deploys.parts.procs import say
from facts.procs import MissingPaths

q = shlex.quote


def release_build_steps(path: str, uploads: list[tuple[Path, str]], pip_args: list[str], python: str = "python3") -> list:
    """Build steps for deploys/parts/releases.py `release_built`: upload `uploads` (local
    file, path in the release), make `<release>/venv`, pip install `pip_args`
    (`{release}` in an argument is the release path). Readable by the service user."""
    steps: list = []
    for local, rel in uploads:
        target = f"{path}/{rel}"
        steps.append(StringCommand(f"mkdir -p {q(target.rsplit('/', 1)[0])}"))
        steps.append(FileUploadCommand(str(local), target))
    steps.append(StringCommand(f"chmod -R u=rwX,go=rX {q(path)}"))
    steps.append(StringCommand(f"{q(python)} -m venv {q(path + '/venv')}"))
    if pip_args:
        args = " ".join(q(a.replace("{release}", path)) for a in pip_args)
        log = q(path + "/.pip.log")
        steps.append(StringCommand(
            f"{q(path + '/venv/bin/pip')} install --quiet --disable-pip-version-check {args} > {log} 2>&1 "
            f"|| {{ tail -n 30 {log} >&2; echo 'pip install failed: the live release keeps serving' >&2; exit 1; }}"
        ))
    return steps


@operation()
def venv_built(venv: str, python: str, requirements: str, pip_args: list[str], step=None):
    """A venv from the runtime requirements at its final path (venvs are not relocatable),
    shared by every backend release with the same requirements; `.complete` last, so a
    failed pip install is never used and is rebuilt from scratch next time.

    `step(script) -> command` runs the build as a host step (deploys/parts/host_steps.py:
    a transient unit an SSH drop cannot cut short); the script first looks for a venv an
    earlier, cut-off run finished, so the next apply reports it instead of rebuilding."""
    if not host.get_fact(MissingPaths, paths=json.dumps([f"{venv}/.complete", f"{venv}/bin/python"])):
        host.noop(f"venv {venv.rsplit('/', 1)[-1]} is built")
        return
    say(f"building the backend venv {venv} with {python} from {requirements}")
    yield (StringCommand(venv_script(venv, python, requirements, pip_args)) if step is None
           else step(venv_script(venv, python, requirements, pip_args, resume=True)))


def venv_script(venv: str, python: str, requirements: str, pip_args: list[str], resume: bool = False,
                venv_args: list[str] = (), failure: str = "pip install failed: the live release keeps serving") -> str:
    """The shell that builds `venv` (`python -m venv <venv_args>`); `resume`: nothing when
    an earlier run completed it; `failure`: said after pip's last lines when it fails."""
    args = " ".join(q(a) for a in pip_args)
    created = " ".join([q(python), "-m venv", *[q(a) for a in venv_args], q(venv)])
    build = (
        f"rm -rf {q(venv)} && mkdir -p {q(venv.rsplit('/', 1)[0])} && {created} && "
        f"{{ {q(venv + '/bin/pip')} install --quiet --disable-pip-version-check {args} -r {q(requirements)} > {q(venv + '.log')} 2>&1 "
        f"|| {{ tail -n 30 {q(venv + '.log')} >&2; echo {q(failure)} >&2; exit 1; }}; }} && "
        f"touch {q(venv + '/.complete')}"
    )
    if not resume:
        return build
    done = f"[ -f {q(venv + '/.complete')} ] && [ -x {q(venv + '/bin/python')} ]"
    note = f"venv {venv.rsplit('/', 1)[-1]} was built by an earlier run (cut off before it saw the end)"
    return f"if {done}; then echo {q(note)}; else {build}; fi"
