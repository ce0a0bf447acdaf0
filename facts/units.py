"""A systemd unit's state and last journal lines: what a failed health gate reports.

"connection refused" alone hides the reason (an ImportError, `Errno 97` from a sandbox,
a start limit); the unit's state and its last lines name it.
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

STATE_HEADER = "--- unit state ---"
JOURNAL_HEADER = "--- journal ---"
_PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result", "NRestarts", "ExecMainStatus")


def parse_unit_diagnostics(output: list[str]) -> dict:
    """`{"state": {prop: value}, "journal": [lines]}` from the fact's output."""
    result: dict = {"state": {}, "journal": []}
    section = None
    for line in output:
        if line.strip() == STATE_HEADER:
            section = "state"
        elif line.strip() == JOURNAL_HEADER:
            section = "journal"
        elif section == "state" and "=" in line:
            key, _, value = line.partition("=")
            result["state"][key.strip()] = value.strip()
        elif section == "journal" and line.strip():
            result["journal"].append(line.rstrip())
    return result


def describe_unit(unit: str, diag: dict | None) -> str:
    """One readable paragraph: state, result, restarts, then the last journal lines."""
    if not diag:
        return f"Unit {unit}: state unknown"
    st = diag.get("state", {})
    head = (f"Unit {unit}: {st.get('ActiveState', '?')}/{st.get('SubState', '?')} "
            f"(result {st.get('Result', '?')}, exit status {st.get('ExecMainStatus', '?')}, "
            f"restarts {st.get('NRestarts', '?')})")
    lines = diag.get("journal") or ["(no journal lines)"]
    return head + "; last journal lines:\n  " + "\n  ".join(lines)


class UnitDiagnostics(FactBase[dict]):
    """State and the last `lines` journal lines of `unit` (read when called)."""

    def command(self, unit: str, lines: int = 12) -> str:
        quoted = shlex.quote(unit)
        props = ",".join(_PROPERTIES)
        return (f"echo '{STATE_HEADER}'; systemctl show -p {props} {quoted} 2>&1; "
                f"echo '{JOURNAL_HEADER}'; journalctl -u {quoted} -n {int(lines)} --no-pager -o cat 2>&1 || true")

    @staticmethod
    def default() -> dict:
        return {"state": {}, "journal": []}

    def process(self, output: list[str]) -> dict:
        return parse_unit_diagnostics(output)
