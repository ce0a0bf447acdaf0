"""A HiveSync backend release on the Linode, and its way back.

Before the release changes (a new image, or a new compose file: port, command ...): a
verified pg_dump of the live database, the compose and env files as they are, and in
<dir>/.previous-image the image running now and the database's state (schema fingerprint
+ Alembic revision when there is one: the real app has no Alembic, create_all changes the
fingerprint). After it: a health gate that, when the release fails, puts the previous
image, compose and env files back and restores the dump only when the failed release
changed the database; a first deploy (nothing to roll back to) can defer to a final gate.
"""

from __future__ import annotations

import hashlib
import logging
import time

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.context import state
from pyinfra.facts.files import File, Sha256File

from deploys.operations import poll
from deploys.parts.compose import detected_cli, fail_command
from deploys.parts.hivesync_stack import CONTAINER, _psql, backend_image, backend_url, stack_check
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
    dump = f"{backups}/hivesync-{stamp}.dump"
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


@operation()
def backup_before_release(compose: str):
    """A verified pg_dump and the current files before the release changes: a new image
    or a new compose file (port, command, ...). First deploy: nothing to save."""
    data = host.data
    image = backend_image(data)
    current = host.get_fact(ContainerImage, container=CONTAINER["backend"], image=image)
    if not current["running_id"]:
        host.noop("no backend running yet: nothing to back up")
        return
    path = f"{data.hivesync_dir}/{data.hivesync_compose_file}"
    same_image = current["wanted_id"] and current["wanted_id"] == current["running_id"]
    same_compose = host.get_fact(Sha256File, path=path) == hashlib.sha256(compose.encode()).hexdigest()
    if same_image and same_compose:
        host.noop(f"backend already runs {image} from this compose file")
        return
    what = "compose file changes" if same_image else f"image changes ({current['running_name']} -> " \
        f"{image})"
    host.log(f"backend {what}: pg_dump first")
    yield backup_command(data, time.strftime("%Y%m%dT%H%M%S"), current)


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
    """Health gate; when it fails after this run changed the release, roll back.

    With `defer`, a failure that has nothing to roll back to (the first deploy) does not
    stop the run here: nginx and TLS still come up, and the final gate fails the run.
    """
    data = host.data
    description = f"compose project {data.hivesync_compose_project}"
    if not state.is_executing:
        host.noop(f"{description}: checked when the deploy runs")
        return
    ok, observed = poll(stack_check(data, schema=schema), timeout_s, interval_s)
    if ok:
        host.noop(f"{description}: {observed}")
        return
    reason = f"{description}: not healthy after {timeout_s:g}s; last observed: {observed}"
    if upgraded() and host.get_fact(File, path=f"{data.hivesync_dir}/.previous-image"):
        yield rollback_command(data, reason)
        return
    if defer:
        host.log(f"{reason}; no previous release to roll back to: setting up nginx/TLS, "
                 "the final health gate decides", log_func=logger.warning)
        host.noop(f"{description}: not healthy yet (first deploy)")
        return
    yield fail_command(reason)
