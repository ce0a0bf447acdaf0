"""Compose-image releases: a release is the set of images a compose stack runs, recorded
in the releases layout (deploys/parts/releases.py `Series`, the host library
templates/opt/infra/lib/release_records.py), so `make releases` / `make rollback` work
for a stack whose code comes as images (hivesync's backend, archon's whole stack).

What hivesync and archon share: the "live and recorded" test, the warning when a plain
deploy undoes a rollback, and for a many-image stack (archon) the images it runs
(`StackImages`), their release id (a digest of the image ids per service, the same on
the controller and on the host), the host-side record (`record_images_script`) and the
steps of a release: the data backup before the images change (`backup_before_release`),
the health gate that puts the previous images back (`gate_or_rollback`; and the same when
`up -d` itself fails on a new image that never gets healthy: `rollback_if_up_fails`), the record after
the gates (`release_recorded`), and for a rollback the recorded image ids retagged
(`images_retagged`) and the target's data put back (`data_restored`). The deploy gives
the data commands (archon: archon-migrate backup/restore).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from io import BytesIO

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.files import Directory, File, Sha256File

from deploys.operations import poll_gate
from deploys.parts import releases
from deploys.parts.compose import detected_cli, fail_command
from deploys.parts.release_records import LIB_DIR, lib

logger = logging.getLogger("pyinfra")
q = shlex.quote

KIND = "images"  # release_id's first part: what an images release digests


class StackImages(FactBase):
    """`{"running": {service: {"id", "name"}}, "wanted": {service: id or None}}`: the image
    each container of compose project `project` runs (containers of another project, e.g. an
    old layout's with the same names, are left out) and the local id of each wanted image."""

    def command(self, project: str, containers: dict, images: dict) -> str:
        # two docker calls, not one per container and image (each docker CLI start is about
        # 70 ms on a small host: archon's 8 + 8 calls made 1.1 s, the longest fact of its no-op)
        fmt = q('{{.Name}} {{index .Config.Labels "com.docker.compose.project"}} {{.State.Running}} {{.Image}} '
                '{{.Config.Image}}')
        lines = ["echo images"]
        if containers:
            cases = " ".join(f"{q('/' + c)}) s={q(service)};;" for service, c in sorted(containers.items()))
            lines.append(f"docker container inspect --format {fmt} {' '.join(q(c) for c in sorted(containers.values()))} "
                         f"2>/dev/null | while read -r n p r id image; do case \"$n\" in {cases} *) continue;; esac; "
                         f'[ "$p" = {q(project)} ] && [ "$r" = true ] && echo running "$s" "$id" "$image"; done')
        if images:
            names = sorted(set(images.values()))
            every = "; ".join(f'echo wanted {q(service)} "${{{names.index(image) + 1}}}"'
                              for service, image in sorted(images.items()))
            one_by_one = "; ".join(f"echo wanted {q(service)} $(docker image inspect --format '{{{{.Id}}}}' "
                                   f"{q(image)} 2>/dev/null)" for service, image in sorted(images.items()))
            # all present (the usual case): one call, ids in argument order; else one by one
            lines.append(f"if ids=$(docker image inspect --format '{{{{.Id}}}}' {' '.join(q(n) for n in names)} "
                         f"2>/dev/null) && [ $(printf '%s\\n' \"$ids\" | wc -l) = {len(names)} ]; "
                         f"then set -- $ids; {every}; else {one_by_one}; fi")
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


def replaces_running(st: dict, services: list[str]) -> list[str]:
    """The services whose running container gets another image: a release replaces what
    serves (a backup first, a way back after). None on a first start, even when an earlier
    step of the run already started the database (archon's schema step does)."""
    return [s for s in changed_services(st, services) if s in st["running"]]


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
    return shlex.join(["python3", "-B", "-c", script, json.dumps(spec, sort_keys=True)])  # -B: root, no __pycache__ in the lib


# ----------------------------------------------------------------------------- the steps of a release
# A deploy hands these its own data commands: `backup` (a shell command taking the data
# before the images change), `restore` (putting a backup back, the stack started after).

PREVIOUS_IMAGES = ".previous-images"  # in the stack's dir: what ran before this run's release, "service id name"


def previous_images_text(running: dict) -> str:
    return "".join(f"{service} {info['id']} {info['name']}\n" for service, info in sorted(running.items()))


@operation()
def backup_before_release(data_dir: str, compose_file: str, project: str, containers: dict, images: dict,
                          backup: str, needs: str):
    """Before the images change (the stack runs and one wanted image is not the running
    one): the `backup` command (which needs service `needs` running), the running images
    and the compose file kept for a rollback. A first deploy: nothing to save."""
    st = host.get_fact(StackImages, project=project, containers=containers, images=images)
    if not st["running"]:
        host.noop("no stack running yet: nothing to back up")
        return
    changed = changed_services(st, sorted(containers))
    if not changed:
        host.noop("the stack already runs these images")
        return
    if not replaces_running(st, sorted(containers)):
        # a first start (only services an earlier step started run): no release served
        # yet, so nothing to back up and no previous images to roll back to
        host.noop(f"no running service changes its image ({', '.join(changed)} not started yet): nothing to back up")
        return
    if needs not in st["running"]:
        yield fail_command(f"the images change ({', '.join(changed)}) but {containers[needs]} is not running: "
                           "no backup possible; start the stack first")
        return
    host.log(f"images change ({', '.join(f'{s} -> {images[s]}' for s in changed)}): data backup first")
    compose = f"{data_dir}/{compose_file}"
    yield StringCommand(backup)
    yield StringCommand(f"printf %s {q(previous_images_text(st['running']))} > {q(data_dir + '/' + PREVIOUS_IMAGES)}"
                        f" && cp -p {q(compose)} {q(compose + '.previous')}")


def backup_present(backup: str | None) -> bool:
    return bool(backup) and bool(host.get_fact(Directory, path=backup) or host.get_fact(File, path=backup))


def rollback_refusal(target: str, backup: str | None, present: bool) -> str | None:
    """Why a rollback to release `target` (not live) cannot put its data back, or None."""
    if not backup:
        return f"rollback: no data backup was taken when release {target} was left: not rolled back"
    if not present:
        return f"rollback: {backup}, the data of release {target}, is gone: not rolled back"
    return None


@operation()
def data_restored(data_dir: str, compose_file: str, compose: str, project: str, containers: dict, images: dict,
                  target: str, backup: str | None, restore: str):
    """A rollback to release `target`: the data backed up when it was left (`backup`) put
    back by `restore` under its compose file; nothing when `target` is live."""
    st = host.get_fact(StackImages, project=project, containers=containers, images=images)
    if running_rid(st, sorted(containers)) == target:
        host.noop(f"release {target} is live")
        return
    if refusal := rollback_refusal(target, backup, backup_present(backup)):
        yield fail_command(refusal)
        return
    host.log(f"the data of release {target}: {backup}")
    compose_path = f"{data_dir}/{compose_file}"
    if host.get_fact(Sha256File, path=compose_path) != hashlib.sha256(compose.encode()).hexdigest():
        yield FileUploadCommand(BytesIO(compose.encode()), compose_path)
        yield StringCommand("chmod", "644", QuoteString(compose_path))
    yield StringCommand(restore)


def rollback_script(data_dir: str, compose_file: str, env_file: str, project: str, containers: list, reason: str,
                    restore: str | None, timeout_s: int, cli: str = "docker compose", profiles=()) -> str:
    """Shell: the images in PREVIOUS_IMAGES retagged to their names, the compose file saved
    before the release back, `restore` (a command) when given, `up -d`, the containers
    healthy again (bounded); the run fails with `reason`."""
    compose = f"{data_dir}/{compose_file}"
    message = f"{reason}. Rolled back to the previous images"
    restore_step = (f"{{ {restore}; }} >&2 && restored=' and the data backed up before this run' "
                    f"|| restored=' BUT restoring the data FAILED';" if restore else "")
    return (
        f"set -u; cd {q(data_dir)} || exit 1; restored='';"
        f"while read -r service id name; do docker tag \"$id\" \"$name\" || "
        f"{{ echo {q(reason + '. Rollback impossible: previous image ')}\"$id\"' is gone' >&2; exit 1; }}; "
        f"done < {q(PREVIOUS_IMAGES)};"
        f"cp -p {q(compose + '.previous')} {q(compose)} || {{ echo {q(reason + '. Rollback impossible: no previous compose file')} >&2; exit 1; }};"
        f"{restore_step}"
        f"{cli} -p {q(project)} -f {q(compose_file)} --env-file {q(env_file)}"
        f"{''.join(f' --profile {q(p)}' for p in profiles)} up -d --remove-orphans >&2;"
        f"for i in $(seq 1 {max(timeout_s // 2, 1)}); do n=0; for c in {' '.join(q(c) for c in containers)}; do "
        f"[ \"$(docker inspect -f '{{{{.State.Health.Status}}}}' \"$c\" 2>/dev/null)\" = healthy ] || n=1; done; "
        f"[ $n = 0 ] && break; sleep 2; done;"
        f"printf '%s%s; the run fails.\\n' {q(message)} \"$restored\" >&2; exit 1"
    )


UP_FAILED = "compose up -d failed after the images changed (compose's message above)"


def rollback_if_up_fails(data_dir: str, compose_file: str, env_file: str, project: str, containers: list,
                         upgraded, timeout_s: float, restored=None, restore: str | None = None,
                         profiles: list | None = None):
    """For compose_stack's `if_up_fails`: when this run changed the images (`upgraded()`),
    the same way back as a failed gate (`rollback_script`); else None (compose's error
    fails the run: nothing served before it to go back to)."""
    def fallback() -> str | None:
        if not upgraded():
            return None
        return way_back_script(data_dir, compose_file, env_file, project, containers, UP_FAILED, timeout_s,
                               restored, restore, profiles)
    return fallback


def way_back_script(data_dir, compose_file, env_file, project, containers, reason, timeout_s, restored, restore,
                    profiles) -> str:
    """`rollback_script` at execution: the data put back only when this run restored
    another's (`restored()`), with the compose CLI the host has."""
    return rollback_script(data_dir, compose_file, env_file, project, containers, reason,
                           restore if restored is not None and restored() else None, int(timeout_s),
                           detected_cli() or "docker compose", profiles or ())


@operation(is_idempotent=True)
def gate_or_rollback(data_dir: str, compose_file: str, env_file: str, project: str, containers: list, check,
                     description: str, timeout_s: float, interval_s: float, upgraded, restored=None,
                     restore: str | None = None, profiles: list | None = None):
    """Health gate; when it fails after this run changed the images (`upgraded()`), the
    previous images and compose file go back (and, when this run restored data:
    `restored()`, the `restore` command puts the data taken before it back), they are
    started, the run fails."""
    reason = poll_gate(check, description, timeout_s, interval_s)
    if reason is None:
        return
    if not (upgraded() and host.get_fact(File, path=f"{data_dir}/{PREVIOUS_IMAGES}")):
        yield fail_command(reason)
        return
    yield StringCommand("bash", "-c", QuoteString(way_back_script(
        data_dir, compose_file, env_file, project, containers, reason, timeout_s, restored, restore, profiles)))


@operation()
def images_retagged(images: dict, image_ids: dict):
    """A rollback's image names back on the ids its release recorded (a tag moved since)."""
    found = host.get_fact(StackImages, project="-", containers={}, images=images)
    moved = {s: image for s, image in sorted(images.items()) if found["wanted"].get(s) != image_ids.get(s)}
    if not moved:
        host.noop("every image name is on its recorded id")
        return
    for service, image in moved.items():
        if not image_ids.get(service):
            yield fail_command(f"rollback: the release recorded no image id for {service}")
            return
        yield StringCommand("docker tag", QuoteString(image_ids[service]), QuoteString(image), "||", "{ echo",
                            QuoteString(f"rollback: image {image_ids[service]} of {image} is gone from this host"),
                            ">&2; exit 1; }")


@operation()
def release_recorded(root: str, component: str, project: str, containers: dict, images: dict, meta: dict,
                     action: str, backup: str | None, keep: int, pin_hint: str):
    """The images that passed the gates, live in the releases layout and last in the
    history, with the backup taken before them; nothing when they already are. A deploy
    that replaces a release `make rollback` put back says so (`pin_hint`: how to stay)."""
    services = sorted(containers)
    st = host.get_fact(StackImages, project=project, containers=containers, images=images)
    rid = wanted_rid(st, services)
    recs = releases.read(root, [component])
    if is_recorded(recs, component, rid) and not changed_services(st, services):
        host.noop(f"release {rid} is live and recorded")
        return
    before = releases.current_components(recs, [component])
    live = releases.app_id(before) if before[component] else None
    new = releases.app_id({component: rid}) if rid else None
    if new and (warning := undone_rollback(recs.get("history") or [], live, new, action, pin_hint)):
        host.log(f"warning: {warning}", log_func=logger.warning)
    yield StringCommand(record_images_script(root, component, containers, images, meta, action, backup, keep))
