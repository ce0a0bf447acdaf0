"""Compose-image releases: a release is the set of images a compose stack runs, recorded
in the releases layout (deploys/parts/releases.py `Series`, the host library
templates/opt/infra/lib/release_records.py), so `make releases` / `make rollback` work
for a stack whose code comes as images (hivesync's backend, archon's whole stack).

What hivesync and archon share: the "live and recorded" test, the warning when a plain
deploy undoes a rollback, and for a many-image stack (archon) the images it runs
(`StackImages`), their release id (a digest of the image ids per service, the same on
the controller and on the host) and the host-side record (`record_images_script`).
"""

from __future__ import annotations

import json
import shlex

from pyinfra.api import FactBase

from deploys.parts.release_records import LIB_DIR, lib

KIND = "images"  # release_id's first part: what an images release digests


class StackImages(FactBase):
    """`{"running": {service: {"id", "name"}}, "wanted": {service: id or None}}`: the image
    each container of compose project `project` runs (containers of another project, e.g. an
    old layout's with the same names, are left out) and the local id of each wanted image."""

    def command(self, project: str, containers: dict, images: dict) -> str:
        q = shlex.quote
        fmt = q('{{index .Config.Labels "com.docker.compose.project"}} {{.State.Running}} {{.Image}} {{.Config.Image}}')
        lines = ["echo images"]
        for service, container in sorted(containers.items()):
            lines.append(f"set -- $(docker inspect --format {fmt} {q(container)} 2>/dev/null); "
                         f'[ "${{1:-}}" = {q(project)} ] && [ "${{2:-}}" = true ] && echo running {q(service)} "$3" "$4"')
        for service, image in sorted(images.items()):
            lines.append(f"echo wanted {q(service)} $(docker image inspect --format '{{{{.Id}}}}' {q(image)} 2>/dev/null)")
        return "; ".join(lines) + "; true"

    @staticmethod
    def default() -> dict:
        return {"running": {}, "wanted": {}}

    def process(self, output: list[str]) -> dict:
        return parse_stack_images(output)


def parse_stack_images(output: list[str]) -> dict:
    result = {"running": {}, "wanted": {}}
    for line in output:
        words = line.split()
        if len(words) == 4 and words[0] == "running":
            result["running"][words[1]] = {"id": words[2], "name": words[3]}
        elif len(words) in (2, 3) and words[0] == "wanted":
            result["wanted"][words[1]] = words[2] if len(words) == 3 else None
    return result


def images_rid(ids: dict) -> str:
    """The release id of a stack running image `ids` ({service: image id})."""
    return lib.release_id(KIND, sorted(ids.items()))


def changed_services(st: dict, services: list[str]) -> list[str]:
    """The services whose wanted image is not the one running (or not here yet)."""
    running, wanted = st["running"], st["wanted"]
    return [s for s in services if not wanted.get(s) or (running.get(s) or {}).get("id") != wanted[s]]


def wanted_rid(st: dict, services: list[str]) -> str | None:
    """The release id the wanted images make, None while one is not on the host yet."""
    ids = {s: st["wanted"].get(s) for s in services}
    return images_rid(ids) if all(ids.values()) else None


def running_rid(st: dict, services: list[str]) -> str | None:
    ids = {s: (st["running"].get(s) or {}).get("id") for s in services}
    return images_rid(ids) if all(ids.values()) else None


def is_recorded(st: dict, component: str, rid: str | None) -> bool:
    """`rid` is the live release, complete, and the history ends with it: nothing to record."""
    if rid is None:
        return False
    comp = st["components"].get(component) or {}
    history = st.get("history") or []
    return (comp.get("current") == rid and bool((comp.get("releases") or {}).get(rid, {}).get("complete"))
            and bool(history) and history[-1].get("id") == lib.app_id({component: rid}))


def undone_rollback(history: list[dict], live: str | None, new: str, action: str, pin_hint: str) -> str | None:
    """A plain deploy after `make rollback` goes back to the configured release: worth a
    line, since the operator rolled back for a reason. Ids as `make releases` lists them."""
    last = history[-1] if history else {}
    if action != "deploy" or last.get("action") != "rollback" or not live or live == new:
        return None
    return (f"release {live} was put back by a rollback at {last.get('at')}; this deploy replaces it with "
            f"{new} {pin_hint}")


def backup_when_left(history: list[dict], app: str) -> str | None:
    """The data backup taken when release `app` (an app id) was last left: the `backup` of
    the history line right after its last one (None when it is live, never left, or
    that switch took none). A rollback to `app` puts this database back."""
    last = max((i for i, e in enumerate(history) if e.get("id") == app), default=None)
    if last is None or last + 1 >= len(history):
        return None
    return history[last + 1].get("backup") or None


# The host side of `record_images_script` (python3, the installed library imported).
_RECORD = """
import json, subprocess, sys
sys.path.insert(0, {lib_dir!r})
import release_records as lib
spec = json.loads(sys.argv[1])
ids = {{}}
for service, container in sorted(spec["containers"].items()):
    out = subprocess.run(["docker", "inspect", "--format", "{{{{.Image}}}}", container], capture_output=True, text=True)
    if out.returncode or not out.stdout.strip():
        sys.exit("release not recorded: container %s (%s) is not there" % (container, service))
    ids[service] = out.stdout.strip()
rid = lib.release_id({kind!r}, sorted(ids.items()))
release = dict(spec["meta"], images=spec["images"], image_ids=ids)
entry = lib.record(spec["root"], spec["component"], rid, spec["action"], spec["meta"], release, spec["backup"])
print("release %s is live and recorded" % rid + (" (%s %s)" % (entry["action"], entry["id"]) if entry else ""))
lib.prune(spec["root"], [spec["component"]], keep=spec["keep"])
"""


def record_images_script(root: str, component: str, containers: dict, images: dict, meta: dict, action: str,
                         backup: str | None, keep: int) -> str:
    """A command line that records the images the containers run NOW (after the gates) as
    the live release of `component` under `root`: release.json (the meta, image names and
    ids), the live link, the history line (with the backup taken before it); then keeps
    `keep` releases."""
    spec = {"root": root, "component": component, "containers": containers, "images": images, "meta": meta,
            "action": action, "backup": backup, "keep": int(keep)}
    script = _RECORD.format(lib_dir=LIB_DIR, kind=KIND)
    return shlex.join(["python3", "-c", script, json.dumps(spec, sort_keys=True)])
