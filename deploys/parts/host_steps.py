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
Used by deploys/ingestor.py (bin/ingestor-release); archon's migration can use it too.
"""

from __future__ import annotations

import re

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation
from typing_extensions import override

from deploys.errors import ConfigError

_UNIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")

# Waits for an earlier run of "$unit" (its apply was cut off) and prints how it ended.
_WAIT = r"""
note() { echo "host step $unit: $*" >&2; logger -t host-step "$unit: $*" 2>/dev/null || true; }
if systemctl is-active -q "$unit"; then
    note "an earlier run (an apply that was cut off) is still going: waiting for it"
    since=$(systemctl show -p ActiveEnterTimestamp --value "$unit")
    while systemctl is-active -q "$unit"; do sleep 2; done
    journalctl -q -o cat -u "$unit" --since "$since" | tail -n 200 >&2
    note "the earlier run ended: $(systemctl show -p Result --value "$unit")"
fi
""".strip()

# $1 unit, $2 timeout seconds, $3 description, $4 follow (1: stream the journal while the
# step runs, else print its last 400 lines when it ends), then argv.
_SCRIPT = r"""
unit="$1.service"; timeout="$2"; description="$3"; follow="$4"; shift 4
""".strip() + "\n" + _WAIT + "\n" + r"""
systemctl reset-failed "$unit" >/dev/null 2>&1 || true
start=$(date '+%Y-%m-%d %H:%M:%S')
if [ "$follow" = 1 ]; then
    seen=$(mktemp)
    journalctl -q -o cat -f -u "$unit" --since "$start" >"$seen" 2>/dev/null & jpid=$!
    tail -n +1 -s 0.2 --pid="$jpid" -f "$seen" & tpid=$!
fi
systemd-run --quiet --wait --unit="$unit" --description="$description" \
    --property=TimeoutStopSec=120 --property=RuntimeMaxSec="$timeout" --property=KillMode=mixed \
    --property=StandardOutput=journal --property=StandardError=journal -- "$@"
rc=$?
if [ "$follow" = 1 ]; then
    total=$(journalctl -q -o cat -u "$unit" --since "$start" | wc -l); i=0
    while [ "$(wc -l < "$seen")" -lt "$total" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill "$jpid" 2>/dev/null; wait "$tpid" 2>/dev/null; rm -f "$seen"
else
    journalctl -q -o cat -u "$unit" --since "$start" | tail -n 400
fi
if [ "$rc" -ne 0 ]; then
    note "failed (exit $rc); its journal: journalctl -u $unit"
fi
exit "$rc"
""".strip()


def host_step(unit: str, argv: list[str], description: str = "", timeout_s: int = 7200,
              follow: bool = False) -> StringCommand:
    """The command that runs `argv` as the transient unit `<unit>.service` (see module doc).

    `follow`: stream the unit's journal while it runs (a long build shows its progress in
    `pyinfra -vvv` and the cause of a failure in full), instead of its last 400 lines."""
    if not _UNIT.match(unit):
        raise ConfigError(f"host step unit name {unit!r}: use letters, digits, '-', '_', '.', '@'")
    if int(timeout_s) < 1:
        raise ConfigError(f"host step {unit}: timeout_s must be positive")
    return StringCommand("sh", "-c", QuoteString(_SCRIPT), "host-step", QuoteString(unit), str(int(timeout_s)),
                         QuoteString(description or unit), "1" if follow else "0", *[QuoteString(a) for a in argv])


@operation(is_idempotent=True)
def wait_for_step(unit: str):
    """An unfinished run of `<unit>.service` (its apply was cut off): wait for it to end
    (it is bounded by its own RuntimeMaxSec) and print its journal and result, before the
    operations that follow change its files. Nothing running: no change."""
    state = host.get_fact(UnitState, unit=unit)
    if not unfinished(state):
        host.noop(f"{unit}.service: no unfinished run")
        return
    host.log(f"{unit}.service is still running (an apply was cut off): waiting for it first")
    yield StringCommand("sh", "-c", QuoteString(f'unit="$1.service"\n{_WAIT}'), "host-step", QuoteString(unit))


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
    def command(self, unit: str) -> str:
        if not _UNIT.match(unit):
            raise ConfigError(f"unit name {unit!r} is not valid")
        return f"echo Unit={unit}; systemctl show -p ActiveState -p Result -p ExecMainStatus {unit}.service"

    @staticmethod
    @override
    def default() -> dict:
        return {}

    @override
    def process(self, output: list[str]) -> dict:
        return parse_unit_state(output)


def unfinished(state: dict) -> bool:
    return state.get("ActiveState") in ("active", "activating", "deactivating", "reloading")
