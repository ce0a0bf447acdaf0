"""Host-side steps as transient systemd units (`systemd-run`): a dropped SSH session, a
pyinfra timeout or a killed client cannot interrupt them half-way, and their rollback runs.

    from deploys.parts.host_steps import host_step, UnitState
    yield host_step("ingestor-release", ["/opt/x/bin/release", "plan.json"], "ha-ingestor release")

`host_step(unit, argv)` is one shell command, for an operation to yield:

1. an earlier run of the same unit still going (its apply was cut off): wait for it to end
   and print its output and result (also to the journal, tag `host-step`); a failed one
   is reset so the unit name is free;
2. start `argv` as the transient service `<unit>.service` (`systemd-run --wait`), output
   to the journal, killed only by its own timeout (`timeout_s`);
3. print that run's journal (so pyinfra shows it; with `follow`, streamed while it runs)
   and exit with the service's status: the operation fails exactly when the step failed.

`UnitState(unit)` reads `<unit>.service`'s ActiveState / Result / ExecMainStatus, so a
deploy sees an unfinished (or failed) run before it decides what to do, and
`wait_for_step(unit)` (an operation) waits for an unfinished one and reports how it ended:
put it BEFORE the operations that change what that step reads (a cut-off release must not
find the next run's files under it).
`scope="user"` (host_step, wait_for_step, UnitState): a unit of the login user's own
systemd manager (`systemd-run --user`, no root; it outlives the SSH session only with
lingering), its output in a log file (a user's journal is often unreadable to the user).
`settled(unit)` waits for an unfinished run while the deploy is still planned (its
facts then read what that run left). Used by deploys/ingestor.py (bin/ingestor-release),
archon's migration, hivesync's build, youtube's builds (user scope) and the host-side
release switch (releases.releases_switched_on_host; music, and youtube in user scope).
"""

from __future__ import annotations

import re

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation
from typing_extensions import override

from deploys.errors import ConfigError
from facts.procs import USER_SYSTEMCTL

_UNIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
_LOG = re.compile(r"^/[A-Za-z0-9_./@+-]+$")
SCOPES = ("system", "user")
# what a user step keeps of the session's environment (if set): it runs as it would in the foreground
USER_ENV = ("PATH", "LANG", "LC_ALL", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
            "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")

# Needs $unit, $scope (system|user), $log ("" = the journal): sets $sc and output().
_SCOPE = r"""
if [ "$scope" = user ]; then
    export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"; sc="systemctl --user"
else
    sc="systemctl"
fi
# the "Failed to open /run/systemd/transient/<unit>" systemd logs when the unit is queried
# before it exists: noise, dropped from the output shown
quiet() { grep --line-buffered -v -E "^[^ ]+: Failed to open /run/systemd/transient/[^ ]+: No such file or directory\$" || true; }
output() {  # $1 lines, $2 since
    if [ -n "$log" ]; then tail -n "$1" "$log" 2>/dev/null; else journalctl -q -o cat -u "$unit" --since "$2" | quiet | tail -n "$1"; fi
}
running() {  # active, or on its way in or out
    s=$($sc is-active "$unit" 2>/dev/null) && return 0
    case "$s" in activating|deactivating|reloading|refreshing) return 0 ;; esac
    return 1
}
""".strip()

# Waits for an earlier run of "$unit" (its apply was cut off) and prints how it ended.
_WAIT = _SCOPE + "\n" + r"""
note() { echo "host step $unit: $*" >&2; logger -t host-step "$unit: $*" 2>/dev/null || true; }
if running; then
    note "an earlier run (an apply that was cut off) is still going: waiting for it"
    since=$($sc show -p ActiveEnterTimestamp --value "$unit")
    while running; do sleep 2; done
    output 200 "$since" >&2
    note "the earlier run ended: $($sc show -p Result --value "$unit")"
fi
""".strip()

# $1 unit, $2 timeout seconds, $3 description, $4 scope, $5 log file ("" = the journal),
# $6 follow (1: stream the output while the step runs, else its last 400 lines at the end), then argv.
_SCRIPT = r"""
unit="$1.service"; timeout="$2"; description="$3"; scope="$4"; log="$5"; follow="$6"; shift 6
""".strip() + "\n" + _WAIT + "\n" + r"""
$sc reset-failed "$unit" >/dev/null 2>&1 || true
start=$(date '+%Y-%m-%d %H:%M:%S')
if [ -n "$log" ]; then
    [ -e "$log" ] && mv -f "$log" "$log.1"
    : > "$log"; out="--property=StandardOutput=append:$log --property=StandardError=append:$log"
else
    out="--property=StandardOutput=journal --property=StandardError=journal"
fi
props="--property=TimeoutStopSec=120 --property=RuntimeMaxSec=$timeout --property=KillMode=mixed $out"
if [ "$follow" = 1 ]; then  # a follower that prints each line once, until its source ($spid) ends
    if [ -n "$log" ]; then
        src="$log"; sleep 2147483647 & spid=$!
    else
        src=$(mktemp); journalctl -q -o cat -f -u "$unit" --since "$start" >"$src" 2>/dev/null & spid=$!
    fi
    tail -n +1 -s 0.2 --pid="$spid" -f "$src" | quiet & fpid=$!
fi
if [ "$scope" = user ]; then
    # `--wait` needs the user's D-Bus (dbus-user-session), which many machines lack: start
    # the unit (the manager's private socket is enough), then follow it to its end
    run="systemd-run --user"
    for name in $USER_ENV; do eval "[ -n \"\${$name+x}\" ]" && run="$run --setenv=$name"; done
    $run --quiet --unit="$unit" --description="$description" $props -- "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        while running; do sleep 1; done
        # a unit that succeeded is gone (its Result reads success); a failed one stays loaded
        if [ "$($sc show -p Result --value "$unit")" != success ]; then
            rc=$($sc show -p ExecMainStatus --value "$unit")
            [ "${rc:-0}" -gt 0 ] 2>/dev/null || rc=1
        fi
    fi
else
    systemd-run --quiet --wait --unit="$unit" --description="$description" $props -- "$@"
    rc=$?
fi
if [ "$follow" = 1 ]; then
    if [ -z "$log" ]; then  # let the follower catch up with the journal, then stop it
        total=$(journalctl -q -o cat -u "$unit" --since "$start" | wc -l); i=0
        while [ "$(wc -l < "$src")" -lt "$total" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    kill "$spid" 2>/dev/null; wait "$fpid" 2>/dev/null; [ -n "$log" ] || rm -f "$src"
else
    output 400 "$start"
fi
if [ "$rc" -ne 0 ]; then
    note "failed (exit $rc); its output: ${log:-journalctl -u $unit}"
fi
exit "$rc"
""".strip().replace("$USER_ENV", " ".join(USER_ENV))


def _scope_checked(unit: str, scope: str, log: str | None) -> None:
    if not _UNIT.match(unit):
        raise ConfigError(f"host step unit name {unit!r}: use letters, digits, '-', '_', '.', '@'")
    if scope not in SCOPES or (scope == "user" and not log) or (log and not _LOG.match(log)):
        raise ConfigError(f"host step {unit}: scope {scope!r} (system or user) / log {log!r} "
                          "(a user step needs a log file: an absolute path without spaces)")


def host_step(unit: str, argv: list[str], description: str = "", timeout_s: int = 7200, scope: str = "system",
              log: str | None = None, follow: bool = False) -> StringCommand:
    """The command that runs `argv` as the transient unit `<unit>.service` (see module doc).
    `scope="user"`: a unit of the login user's manager, its output in `log` (required).
    `follow`: stream the output (journal or log) while the step runs - a long build shows
    its progress in `pyinfra -vvv` and a failure's cause in full - instead of its last 400
    lines when it ends."""
    _scope_checked(unit, scope, log)
    if int(timeout_s) < 1:
        raise ConfigError(f"host step {unit}: timeout_s must be positive")
    return StringCommand("sh", "-c", QuoteString(_SCRIPT), "host-step", QuoteString(unit), str(int(timeout_s)),
                         QuoteString(description or unit), scope, QuoteString(log or ""), "1" if follow else "0",
                         *[QuoteString(a) for a in argv])


@operation(is_idempotent=True)
def wait_for_step(unit: str, scope: str = "system", log: str | None = None):
    """An unfinished run of `<unit>.service` (its apply was cut off): wait for it to end
    (it is bounded by its own RuntimeMaxSec) and print its journal and result, before the
    operations that follow change its files. Nothing running: no change."""
    _scope_checked(unit, scope, log)
    state = host.get_fact(UnitState, unit=unit, scope=scope)
    if not unfinished(state):
        host.noop(f"{unit}.service: no unfinished run")
        return
    host.log(f"{unit}.service is still running (an apply was cut off): waiting for it first")
    yield StringCommand("sh", "-c", QuoteString(f'unit="$1.service"; scope="$2"; log="$3"\n{_WAIT}'), "host-step",
                        QuoteString(unit), scope, QuoteString(log or ""))


def parse_unit_state(output: list[str]) -> dict[str, str]:
    """`systemctl show -p ActiveState,Result,ExecMainStatus` lines -> a dict."""
    state = {}
    for line in output:
        key, sep, value = line.partition("=")
        if sep:
            state[key.strip()] = value.strip()
    return state


class UnitState(FactBase[dict]):
    """{"ActiveState": "active"|"inactive"|"failed"|..., "Result": ..., "ExecMainStatus": ...}
    of `<unit>.service` (a transient unit that finished well is gone: "inactive")."""

    @override
    def command(self, unit: str, scope: str = "system") -> str:
        if not _UNIT.match(unit) or scope not in SCOPES:
            raise ConfigError(f"unit name {unit!r} / scope {scope!r} is not valid")
        systemctl = USER_SYSTEMCTL if scope == "user" else "systemctl"
        return f"echo Unit={unit}; {systemctl} show -p ActiveState -p Result -p ExecMainStatus {unit}.service"

    @staticmethod
    @override
    def default() -> dict:
        return {}

    @override
    def process(self, output: list[str]) -> dict:
        return parse_unit_state(output)


def unfinished(state: dict) -> bool:
    return state.get("ActiveState") in ("active", "activating", "deactivating", "reloading")


def settled(unit: str, scope: str = "system", log: str | None = None) -> None:
    """Call while the deploy is prepared, before it reads the facts that unit changes: an
    unfinished run of `<unit>.service` (a release switch whose apply was cut off) is waited
    for right now and its end reported, so this run plans from what it left (a switch that
    went through, or was rolled back), not from the host half-way. `wait_for_step`, the
    operation, waits only when the run executes, after the plan was made."""
    _scope_checked(unit, scope, log)
    if not unfinished(host.get_fact(UnitState, unit=unit, scope=scope)):
        return
    host.log(f"{unit}.service is still running (an apply was cut off): waiting for it before planning")
    command = StringCommand("sh", "-c", QuoteString(f'unit="$1.service"; scope="$2"; log="$3"\n{_WAIT}'), "host-step",
                            QuoteString(unit), scope, QuoteString(log or ""))
    ok, output = host.run_shell_command(command)
    for line in list(output.stdout_lines) + list(output.stderr_lines):
        host.log(line)
    ended = host.get_fact(UnitState, unit=unit, scope=scope)
    host.log(f"{unit}.service: the earlier run ended ({ended.get('Result') or 'gone'}); planning from what it left")
