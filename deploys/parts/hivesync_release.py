"""A HiveSync backend release on the Linode, and its way back.

Before the release changes (a new image, or a new compose file: port, command ...): a
verified pg_dump of the live database, the compose and env files as they are, and in
<dir>/.previous-image the image running now and the database's state (schema fingerprint
+ Alembic revision when there is one: the real app has no Alembic, create_all changes the
fingerprint). After it: a health gate that, when the release fails, puts the previous
image, compose and env files back and restores the dump only when the failed release
changed the database; a first deploy (nothing to roll back to) can defer to a final gate.

The built images (`src-<content>` tags, source_image keeps N) are a release series as
operators see it (deploys/parts/releases.py `Series`): after the final gate a release
passed, `release_recorded` has the release records library (deploys/parts/release_records.py)
write <dir>/releases/backend/<id>/release.json (image, its id, commit, ref), point
<dir>/backend at it and append the history line, so `make releases DEPLOY=hivesync`
lists them and `make rollback DEPLOY=hivesync [TO=id]` picks one; the deploy then
retags the recorded image id (`image_retagged`) and runs the server role with that image
pinned (backup, gate, roll back on failure, like any release).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import File, Sha256File

from deploys.operations import poll_gate
from deploys.parts import compose_releases, deploy_lock, release_records
from deploys.parts.compose import detected_cli, fail_command
from deploys.parts.hivesync_stack import CONTAINER, _psql, backend_image, backend_source, backend_url, stack_check
from deploys.parts.releases import Series, app_id, current_components, read, release_id
from facts.hivesync import ContainerImage

logger = logging.getLogger("pyinfra")


REVISION_SQL = "SELECT version_num FROM alembic_version"


# The schema's fingerprint (tables, columns, types): create_all and Alembic both change it.
SCHEMA_SQL = ("SELECT count(DISTINCT table_name) || 't-' || left(md5(coalesce(string_agg(table_name || '.' || "
              "column_name || ':' || data_type, ',' ORDER BY table_name, column_name), '')), 12) "
              "FROM information_schema.columns WHERE table_schema = 'public'")


def db_state_shell(data, var: str) -> list:
    """Shell words setting $var to `<schema fingerprint>@<Alembic revision or ->`: what a
    rollback compares to decide whether the failed release changed the database."""
    return [f"{var}_s=$(", *_psql(data, SCHEMA_SQL), "2>/dev/null);",
            f"{var}_r=$(", *_psql(data, REVISION_SQL), "2>/dev/null | tr -s '\\n' ',');",
            f'{var}="${{{var}_s:-?}}@${{{var}_r%,}}"; {var}="${{{var}%@}}";',
            f'case "${var}" in *@*) ;; *) {var}="${var}@-";; esac;']


def backup_command(data, stamp: str, running: dict) -> StringCommand:
    """pg_dump (custom format) of the live DB, verified with pg_restore --list, plus what a
    rollback needs in <dir>/.previous-image: the image id + name running now, the DB's
    state (schema fingerprint + Alembic revision if any) and the dump (restored when the
    failed release changed the database); the compose and env files as they are now."""
    env = data.hivesync_backend_env
    base, backups = data.hivesync_dir, data.hivesync_backup_dir
    dump = dump_path(data, stamp)
    compose = f"{base}/{data.hivesync_compose_file}"
    env_path = f"{base}/{data.hivesync_env_file}"
    return StringCommand(
        "set -e;", "umask 077;", "mkdir -p", QuoteString(backups), ";", "chmod 700", QuoteString(backups), ";",
        "docker exec", QuoteString(CONTAINER["postgres"]), "pg_dump -U", QuoteString(env["POSTGRES_USER"]),
        "-d", QuoteString(env["POSTGRES_DB"]), "-Fc >", QuoteString(dump + ".tmp"), ";",
        "tables=$(docker exec -i", QuoteString(CONTAINER["postgres"]), "pg_restore --list <", QuoteString(dump + ".tmp"),
        "| grep -c ' TABLE ' || true);",
        'if [ "$tables" -lt 1 ]; then echo', QuoteString(f"backup {dump} holds no table: refusing to change the image"),
        ">&2; rm -f", QuoteString(dump + ".tmp"), "; exit 1; fi;",
        "mv", QuoteString(dump + ".tmp"), QuoteString(dump), ";",
        *db_state_shell(data, "dbstate"),
        "cp -p", QuoteString(compose), QuoteString(f"{compose}.previous"), ";",
        "cp -p", QuoteString(env_path), QuoteString(f"{env_path}.previous"), ";",
        "echo", QuoteString(f"{running['running_id']} {running['running_name']}"), '"$dbstate"',
        QuoteString(dump), ">", QuoteString(f"{base}/.previous-image"), ";",
        "echo", QuoteString(f"backup {dump}: "), '"$tables tables, database $dbstate";',
        "ls -1t", QuoteString(backups), "| grep '^hivesync-.*\\.dump$' | tail -n +" + str(int(data.hivesync_keep_backups) + 1),
        "| sed", QuoteString(f"s#^#{backups}/#"), "| xargs -r rm -f",
    )


def dump_path(data, stamp: str) -> str:
    return f"{data.hivesync_backup_dir}/hivesync-{stamp}.dump"


def release_change(data, compose: str, image: str) -> tuple[dict | None, str | None]:
    """(the running backend, what changes: None when nothing does) for this run's compose
    file and image; no backend running: (None, None)."""
    current = host.get_fact(ContainerImage, container=CONTAINER["backend"], image=image)
    if not current["running_id"]:
        return None, None
    path = f"{data.hivesync_dir}/{data.hivesync_compose_file}"
    same_image = current["wanted_id"] and current["wanted_id"] == current["running_id"]
    same_compose = host.get_fact(Sha256File, path=path) == hashlib.sha256(compose.encode()).hexdigest()
    if same_image and same_compose:
        return current, None
    return current, "compose file changes" if same_image else f"image changes ({current['running_name']} -> {image})"


@operation()
def backup_before_release(compose: str, image: str, stamp: str):
    """A verified pg_dump and the current files before the release changes: a new image
    or a new compose file (port, command, ...). First deploy: nothing to save.

    `image` is the one this run deploys: a rollback pins an older one, which host.data
    does not know (reading it there re-made the backup and a recreate on every run)."""
    current, what = release_change(host.data, compose, image)
    if current is None:
        host.noop("no backend running yet: nothing to back up")
        return
    if what is None:
        host.noop(f"backend already runs {image} from this compose file")
        return
    host.log(f"backend {what}: pg_dump first")
    yield backup_command(host.data, stamp, current)


def rollback_command(data, reason: str) -> StringCommand:
    """Previous compose file + image back; when the failed release migrated the database,
    stop the backend and restore the dump taken before it; `up -d`, wait for health, fail."""
    env = data.hivesync_backend_env
    base = data.hivesync_dir
    compose = f"{base}/{data.hivesync_compose_file}"
    cli = detected_cli() or "docker compose"
    url = backend_url(data)
    env_path = f"{base}/{data.hivesync_env_file}"
    message = f"{reason}. Rolled back the backend to the previous release"
    impossible = QuoteString(f"{reason}. Rollback impossible, host left as the failed release left it: ")
    pg, user, db = QuoteString(CONTAINER["postgres"]), QuoteString(env["POSTGRES_USER"]), QuoteString(env["POSTGRES_DB"])
    return StringCommand(
        "cd", QuoteString(base), "&&", "read -r prev_id prev_name prev_state dump <", QuoteString(f"{base}/.previous-image"),
        "|| { printf '%s%s\\n'", impossible, "'no record of the previous image'", ">&2; exit 1; };",
        'docker tag "$prev_id" "$prev_name"',
        "|| { printf '%s%s\\n'", impossible, '"previous image $prev_id is gone"', ">&2; exit 1; };",
        "cp -p", QuoteString(f"{compose}.previous"), QuoteString(compose),
        "|| { printf '%s%s\\n'", impossible, "'the previous compose file is gone'", ">&2; exit 1; };",
        "if [ -e", QuoteString(f"{env_path}.previous"), "]; then cp -p", QuoteString(f"{env_path}.previous"),
        QuoteString(env_path), "; fi;",
        *db_state_shell(data, "now_state"), "restored='';",
        'if [ "$now_state" != "$prev_state" ]; then',
        "docker stop", QuoteString(CONTAINER["backend"]), ">/dev/null;",
        # Into an empty schema, in one transaction: `pg_restore --clean` would only drop what
        # the dump has, leaving the failed migration's new tables behind.
        # The SQL is extracted to a 0600 file first: a pg_restore that fails half-way must
        # never feed psql a truncated script after the DROP.
        'sql=$(mktemp) && docker exec -i', pg, 'pg_restore -f - < "$dump" > "$sql"',
        "&& { echo 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;'; cat \"$sql\"; }",
        "| docker exec -i", pg, "psql -q -v ON_ERROR_STOP=1 --single-transaction -U", user, "-d", db, ">/dev/null;",
        'rc=$?; rm -f "$sql";', 'if [ "$rc" -eq 0 ]; then',
        'restored=" and restored the database from $dump (the release had changed the database: ${prev_state} -> ${now_state})";',
        'else restored=" BUT restoring $dump FAILED: the database stays at ${now_state}";',
        "fi;",
        "fi;",
        *cli.split(), "-p", QuoteString(data.hivesync_compose_project), "-f", QuoteString(compose),
        "--env-file", QuoteString(f"{base}/{data.hivesync_env_file}"), "up -d --remove-orphans >&2;",
        "for i in $(seq 1 60); do python3 -c", QuoteString(f"import urllib.request; urllib.request.urlopen({url!r}, timeout=3)"),
        "2>/dev/null && break; sleep 2; done;",
        "printf '%s%s%s\\n'", QuoteString(message), '"$restored"',
        QuoteString(f" (dumps in {data.hivesync_backup_dir}); the run fails."), ">&2; exit 1",
    )


@operation(is_idempotent=True)
def gate_or_rollback(upgraded, timeout_s: float, interval_s: float, defer: bool = False, schema: bool = True):
    """Health gate (operations.poll_gate); when it fails after this run changed the
    release, roll back.

    With `defer`, a failure that has nothing to roll back to (the first deploy) does not
    stop the run here: nginx and TLS still come up, and the final gate fails the run.
    """
    data = host.data
    description = f"compose project {data.hivesync_compose_project}"
    reason = poll_gate(stack_check(data, schema=schema), description, timeout_s, interval_s)
    if reason is None:
        return
    if upgraded() and host.get_fact(File, path=f"{data.hivesync_dir}/.previous-image"):
        yield rollback_command(data, reason)
        return
    if defer:
        host.log(f"{reason}; no previous release to roll back to: setting up nginx/TLS, "
                 "the final health gate decides", log_func=logger.warning)
        host.noop(f"{description}: not healthy yet (first deploy)")
        return
    yield fail_command(reason)


# ----------------------------------------------------------------------------- the release series

COMPONENT = "backend"  # <dir>/backend -> releases/backend/<id>


def release_series(data) -> list[Series]:
    return [Series("HiveSync backend", data.hivesync_dir, (COMPONENT,))]


def release_rid(image: str) -> str:
    """`<repo>:src-<hash12>` -> `<hash12>` (the content tag is the release id); a ready
    image: a digest of its name."""
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    return tag[4:] if tag.startswith("src-") and len(tag) > 4 else release_id("image", image)


def release_meta(data) -> dict:
    """What the release record keeps: the image, the backend's commit (+dirty), ref and
    checkout, who deployed and from which infra commit."""
    source = backend_source(data)
    infra, dirty = deploy_lock.git_revision()
    meta = {"image": backend_image(data), "by": deploy_lock.operator(), "infra_commit": infra, "infra_dirty": dirty}
    if source is not None:
        meta.update(commit=source.commit, dirty=source.dirty, ref=source.ref, source=str(source.root))
    return meta


def record_script(root: str, rid: str, meta: dict, action: str, backup: str | None = None) -> str:
    """The release records library (release_records.py, installed by the deploy): release.json
    (meta + the image's id) and .complete, the live link switched, the history line (with
    the dump taken before the release); then the release dirs whose image is gone
    (source_image pruned it) dropped."""
    q = shlex.quote
    meta_json = json.dumps(meta, sort_keys=True)
    return (
        f"set -e; id=$(docker image inspect --format '{{{{.Id}}}}' {q(meta['image'])}); "
        + release_records.command("record", root, COMPONENT, rid, "--action", action, "--meta", meta_json,
                                  "--release", meta_json, *(["--backup", backup] if backup else []))
        + ' --field "image_id=$id"; '
        + release_records.command("prune", root, COMPONENT, "--probe", "docker image inspect {image_id}")
        + " || echo 'warning: the release records were not pruned' >&2"
    )


@operation()
def release_recorded(root: str, meta: dict, action: str = "deploy", backup: str | None = None):
    """The release that passed the gates, live in the releases layout and last in the
    history (`make releases`), with the dump taken before it; nothing when it already is.
    A deploy that replaces a release `make rollback` put back says so."""
    rid = release_rid(meta["image"])
    st = read(root, [COMPONENT])
    before = current_components(st, [COMPONENT])
    history = st.get("history") or []
    if compose_releases.is_recorded(st, COMPONENT, rid):
        host.noop(f"release {rid} ({meta['image']}) is live and recorded")
        return
    live = app_id(before) if before[COMPONENT] else None
    if warning := undone_rollback(history, live, app_id({COMPONENT: rid}), action):
        host.log(f"warning: {warning}", log_func=logger.warning)
    yield StringCommand(record_script(root, rid, meta, action, backup))


def undone_rollback(history: list[dict], live: str | None, new: str, action: str) -> str | None:
    """compose_releases.undone_rollback, with hivesync's way to stay on the rolled-back release."""
    return compose_releases.undone_rollback(history, live, new, action, "(the checkout's release). Pin "
                                            "hivesync_backend_ref to stay on the rolled-back one.")


@operation()
def image_retagged(image: str, image_id: str | None):
    """A rollback's image name back on the image id its release recorded (a tag pruned
    while its image survived, or a ready image's tag moved since)."""
    wanted = host.get_fact(ContainerImage, container=CONTAINER["backend"], image=image)["wanted_id"]
    if image_id and wanted == image_id:
        host.noop(f"{image} is {image_id[:19]}")
        return
    if not image_id:
        yield fail_command(f"rollback: the release of {image} recorded no image id")
        return
    yield StringCommand("docker tag", QuoteString(image_id), QuoteString(image), "||", "{ echo",
                        QuoteString(f"rollback: image {image_id} of {image} is gone from this host"), ">&2; exit 1; }")
