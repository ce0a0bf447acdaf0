"""Releases built beside the live one, switched atomically, health-gated, rolled back with
their data, N kept. Anchors: Capistrano's `releases/` + `current` link, Kamal's `rollback`
and `app details`.

Layout under `root`, one series per component (a component is what one process runs, so
only the processes whose release changed restart):

    root/releases/<component>/<id>/             one release; `.complete` is written last
    root/<component> -> releases/<component>/<id>   the live link, switched with `mv -T`
    root/releases/history.jsonl                 one line per switch: id, components,
                                                commit (+dirty), when, who, action

A release id is a digest of everything the release contains (sources, lockfile, command,
configuration), so the same inputs give the same release: nothing is built or restarted
again, and redeploying an older state reuses its release if it is still kept.

`release_built` builds a release in its final place (venvs are not relocatable) while the
live one keeps serving; a failed build leaves an incomplete directory that is never
switched to. `releases_switched` then, in ONE sequence run from the controller: backs up the data,
stops the changed processes, switches their links, prepares the data (migrations, with
the new release linked), starts and health-gates. Any failure puts back the previous links and data, starts the previous
processes and fails the run. The deploy supplies the process and data steps as hooks
(`Hook`: called with the pyinfra host at execution, returns (ok, message)), so a systemd
service, user processes or a container stack can use the same part. Hooks run their
commands with `run_command`, which carries the operation's `_sudo`/`_su_user`/`_env`
(facts read inside a hook inherit them from pyinfra). A live link written by an older
layout (anything but `releases/<component>/<id>`) is put back as it was on a rollback. `rollback_target`
and `releases_report` give `make rollback` and `make releases`; `Series` and `release_action`
are what a deploy hands them (several series, as music's two apps; a host-side switch).

`releases_switched_on_host` runs the same sequence ON the host: the hooks are command
lines, written with the rest into a plan (`switch_plan`) that
templates/opt/infra/bin/release-switch (stdlib python3, installed by `switch_script`) runs
as a transient systemd unit (deploys/parts/host_steps.py). A killed pyinfra or a dropped
SSH session no longer leaves the processes stopped: the unit goes on, rolls back on any
failure, writes the history line in the same process as the link switch, and journals
its progress so a run cut off itself (unit killed, host rebooted) is finished or rolled
back by the next one. Ids, history lines, the prune plan and the listing, here and in the
script, are the release records library's (deploys/parts/release_records.py). The deploy
calls `host_steps.settled(unit)` before it plans, so the next apply plans from what a
cut-off switch left. Used by music (`music_switch_on_host`, a system unit, the script in
/opt/infra) and youtube (`youtube_switch_on_host`, a unit of the operator's own systemd
manager, the script in their state dir: `user_switch_script`).

The history ends with the live release: a run cut off after its link switch, before its
history line (or a link changed by hand) leaves it out, so `unrecorded_live` finds the
live release the history does not end with; the next `releases_switched` appends it (action
`cut-off`, commit and author from its release.json) before anything else, and the
listing shows it meanwhile.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, deploy, operation
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
from pyinfra.context import state

from deploys.errors import ConfigError
from deploys.parts.release_records import lib, release_records_installed
from facts.releases import Releases

q = shlex.quote
Hook = Callable[[object], tuple[bool, str]]

# The record format, the prune plan and the listing: the host-side library's (one copy,
# templates/opt/infra/lib/release_records.py, which the host scripts import too).
release_id, app_id, history_entry = lib.release_id, lib.app_id, lib.history_entry
current_components, unrecorded_live = lib.current_components, lib.unrecorded_live
pending_release, prune_plan = lib.pending_release, lib.prune_plan
history_entries, available, report_lines = lib.history_entries, lib.available, lib.report_lines


def release_path(root: str, component: str, rid: str) -> str:
    return f"{root}/releases/{component}/{rid}"


@dataclass(frozen=True)
class Component:
    """One component's wanted release and how its process is stopped, started and gated."""

    name: str
    rid: str
    stop: Hook | str | None = None
    start: Hook | str | None = None
    gate: Hook | str | None = None
    report: str = ""  # host-side switch: a command line printing the unit's state (after a failed gate)


@dataclass(frozen=True)
class DataSteps:
    """The data that goes with a release. `backup(host, tag)` returns (ok, backup path or
    '' when there is nothing to back up); `prepare(host)` runs with the processes stopped,
    before the switch (migrations); `restore(host, path)` puts a backup back."""

    backup: Callable[[object, str], tuple[bool, str]]
    restore: Callable[[object, str], tuple[bool, str]]
    prepare: Hook | None = None


@dataclass(frozen=True)
class HostData:
    """DataSteps as command lines for the host-side switch: `backup` prints the path it
    wrote as its last line ("none": nothing to back up; $RELEASE_TAG is the id live
    before), `restore` puts back $RELEASE_BACKUP, `prepare` runs with the new release
    linked and the processes stopped."""

    backup: str
    restore: str
    prepare: str = ""


@dataclass
class Switch:
    """What a switch writes to the history besides the ids."""

    action: str = "deploy"
    meta: dict = field(default_factory=dict)


def read(root: str, names: list[str]) -> dict:
    return host.get_fact(Releases, root=root, components=" ".join(names))


# ----------------------------------------------------------------------------- build


@operation()
def release_built(root: str, component: str, rid: str, build: list, meta: dict | None = None, mode: str = "700"):
    """Build `releases/<component>/<rid>` beside the live release; nothing when it is
    complete. `build`: commands (str with `{release}` for the path, or pyinfra commands)."""
    st = read(root, [component])
    info = (st["components"].get(component) or {}).get("releases", {}).get(rid)
    if info and info.get("complete"):
        host.noop(f"{component} release {rid} is built")
        return
    path = release_path(root, component, rid)
    if state.is_executing:
        host.log(f"building {component} release {rid} beside the live one")
    # the series dir keeps the default umask (a service user must traverse it), the release
    # is created private and opened to `mode`
    yield StringCommand(f"rm -rf {q(path)} && mkdir -p {q(path.rsplit('/', 1)[0])} && (umask 077 && mkdir {q(path)}) && chmod {mode} {q(path)}")
    for step in build:
        yield StringCommand(step.replace("{release}", q(path))) if isinstance(step, str) else step
    record = {"id": rid, "component": component, "built_at": time.strftime(lib.TIME_FORMAT), **(meta or {})}
    yield StringCommand(f"printf '%s\\n' {q(json.dumps(record, sort_keys=True))} > {q(path + '/release.json')}")
    yield StringCommand(f"touch {q(path + '/.complete')}")


# ----------------------------------------------------------------------------- switch


# How a command runs, not what counts as its success or how often it is retried.
_NOT_FOR_HOOKS = {"_retries", "_retry_delay", "_retry_until", "_success_exit_codes", "_stdin", "_chdir"}


def connector_arguments(host_) -> dict:
    """The running operation's connector arguments (`_sudo`, `_su_user`, `_env` ...): a
    hook's own commands must run as the operation's commands do (its facts already do)."""
    args = getattr(host_, "current_op_global_arguments", None) or {}
    return {key: args[key] for key in CONNECTOR_ARGUMENT_KEYS if key in args and key not in _NOT_FOR_HOOKS}


def run_command(host_, command: str, lines: int = 20) -> tuple[bool, str]:
    """Run `command` on the host from a hook (with the operation's `_sudo` etc.); (ok, the
    last `lines` lines of its output)."""
    ok, output = host_.run_shell_command(StringCommand(command), **connector_arguments(host_))
    out = list(output.stdout_lines) + list(output.stderr_lines)
    return ok, "\n".join(out[-lines:])


_run = run_command


def _link(host_, root: str, name: str, rid: str | None, target: str | None = None) -> tuple[bool, str]:
    """Point `root/name` at release `rid` (or at `target`, a link's text as it was)."""
    link = f"{root}/{name}"
    if rid is None and target is None:
        return _run(host_, f"rm -f {q(link)}")
    target = target or f"releases/{name}/{rid}"
    return _run(host_, f"ln -sfn {q(target)} {q(link + '.new')} && mv -T {q(link + '.new')} {q(link)}")


def _say(host_, message: str) -> None:
    for line in message.splitlines() or [""]:
        host_.log(line)


def _step(host_, what: str, hook: Hook | None) -> tuple[bool, str]:
    if hook is None:
        return True, ""
    ok, message = hook(host_)
    if message:
        _say(host_, f"{what}: {message}")
    return ok, message


def _switch(state, host, root, names, components, data, switch, keep, cleanup):  # noqa: PLR0911
    # (FunctionCommand passes the pyinfra state and host when the parameters have these names)
    host_ = host
    st = host_.get_fact(Releases, root=root, components=" ".join(names))
    before = current_components(st, names)
    targets = {n: (st["components"].get(n) or {}).get("current_target") for n in names}
    changes = [c for c in components if before.get(c.name) != c.rid]
    for c in changes:
        if not (st["components"].get(c.name) or {}).get("releases", {}).get(c.rid, {}).get("complete"):
            _say(host_, f"{c.name} release {c.rid} is not complete: not switched; the live release keeps serving")
            return False
    after = {**before, **{c.name: c.rid for c in changes}}
    moves = ", ".join(f"{c.name} {before.get(c.name) or 'nothing'} -> {c.rid}" for c in changes)
    _say(host_, f"switching {moves}")
    backup = ""
    if data:
        ok, backup = data.backup(host_, app_id(before))
        if not ok:
            _say(host_, f"data backup failed, nothing switched: {backup}")
            return False
        if backup:
            _say(host_, f"data backed up to {backup}")

    def rollback(reason: str, data_touched: bool) -> bool:
        _say(host_, f"FAILED: {lib.failure_headline(reason)}")
        for c in reversed(changes):
            _step(host_, f"{c.name} (new release) stopped", c.stop)
        for c in changes:  # the link's own text: an older layout's target is put back as it was
            _link(host_, root, c.name, before.get(c.name), targets.get(c.name))
        if data_touched and data and backup:
            ok, message = data.restore(host_, backup)
            _say(host_, f"data restored from {backup}" if ok else f"data restore from {backup} FAILED: {message}")
        back = [c for c in changes if before.get(c.name)]
        for c in back:
            if _step(host_, f"{c.name} (previous release) started", c.start)[0]:
                _step(host_, f"{c.name} (previous release) health", c.gate)
        where = ", ".join(f"{c.name} {before.get(c.name)}" for c in back) or "nothing (there was no previous release)"
        _say(host_, f"rolled back to {where}; the run fails")
        return False

    for c in reversed(changes):
        ok, message = _step(host_, f"{c.name} stopped", c.stop)
        if not ok:
            return rollback(f"stopping {c.name}: {message}", False)
    for c in changes:
        ok, message = _link(host_, root, c.name, c.rid)
        if not ok:
            return rollback(f"switching the {c.name} link: {message}", False)
    if data and data.prepare:  # with the new release linked (its migrations, its venv)
        ok, message = _step(host_, "data", data.prepare)
        if not ok:
            return rollback(f"preparing the data for {app_id(after)}: {message}", True)
    for c in changes:
        ok, message = _step(host_, f"{c.name} started", c.start)
        if not ok:
            return rollback(f"{c.name} release {c.rid} did not start: {message}", True)
    for c in changes:
        ok, message = _step(host_, f"{c.name} health", c.gate)
        if not ok:
            return rollback(f"{c.name} release {c.rid} is not healthy: {message}", True)
    entry = history_entry(after, before, switch.action, switch.meta, backup)
    ok, message = _run(host_, history_line(root, entry))
    if not ok:
        _say(host_, f"warning: history not written: {message}")
    fresh = host_.get_fact(Releases, root=root, components=" ".join(names))
    fresh["history"] = list(fresh.get("history") or [])
    for name, rids in prune_plan(fresh, names, keep).items():
        if rids:
            _run(host_, "rm -rf " + " ".join(q(release_path(root, name, r)) for r in rids))
            _say(host_, f"pruned {name} releases {', '.join(rids)} (keeping {keep})")
    if cleanup:
        _step(host_, "cleanup", cleanup)
    _say(host_, f"release {entry['id']} is live")
    return True


def history_line(root: str, entry: dict) -> str:
    """The command appending `entry` to the history (one JSON line)."""
    return f"printf '%s\\n' {q(lib.history_line(entry))} >> {q(root + '/releases/history.jsonl')}"


@operation()
def releases_switched(
    root: str,
    names: list[str],
    components: list[Component],
    data: DataSteps | None = None,
    switch: Switch | None = None,
    keep: int = 3,
    cleanup: Hook | None = None,
):
    """Make `components` live (see the module docstring); nothing when they already are.
    A live release the history lacks is recorded first (`unrecorded_live`)."""
    st = read(root, names)
    if missing := unrecorded_live(st, names):
        say_or_noop = host.log if state.is_executing else host.noop
        say_or_noop(f"release {missing['id']} is live but not in the history (a run was cut off after its switch): recorded")
        yield StringCommand(history_line(root, missing))
        st = {**st, "history": [*(st.get("history") or []), missing]}
    before = current_components(st, names)
    changes = [c for c in components if before.get(c.name) != c.rid]
    if not changes:
        host.noop(f"release {app_id(before)} is live")
        return
    if not state.is_executing:
        host.noop("will switch " + ", ".join(f"{c.name} {before.get(c.name) or 'nothing'} -> {c.rid}" for c in changes))
    yield FunctionCommand(_switch, (root, names, components, data, switch or Switch(), keep, cleanup), {})


# ----------------------------------------------------------------------------- switch on the host


SWITCH_SCRIPT = "/opt/infra/bin/release-switch"  # templates/opt/infra/bin/release-switch


@dataclass(frozen=True)
class HostSwitch:
    """Run the switch ON the host: `SWITCH_SCRIPT run <plan>` as the transient unit `unit`
    (deploys/parts/host_steps.py), so a killed pyinfra or a dropped SSH session neither
    leaves the processes stopped nor skips the rollback. Hooks are command lines."""

    unit: str
    scope: str = "system"
    log: str | None = None  # a user-scope unit's output file (host_steps)
    hook_timeout_s: int = 600
    gate_timeout_s: float = 60
    gate_interval_s: float = 2
    script: str = SWITCH_SCRIPT

    def timeout_s(self, components: int, data: bool) -> int:
        """The unit's bound: every hook at its limit, plus the gates, with a margin."""
        hooks = components * 5 + (4 if data else 0)
        return int(hooks * self.hook_timeout_s + 2 * components * (self.gate_timeout_s + 30) + 120)


@deploy("Release switch script")
def switch_script():
    """Install `release-switch` and the release records library it imports (stdlib
    python3, root-owned, readable by all: a user-scope switch runs it as the login user)."""
    from pyinfra.operations import files

    from deploys.templating import TEMPLATES

    release_records_installed()
    files.directory(name="/opt/infra/bin", path="/opt/infra/bin", user="root", group="root", mode="755")
    files.put(name=SWITCH_SCRIPT, src=str(TEMPLATES / SWITCH_SCRIPT.lstrip("/")), dest=SWITCH_SCRIPT,
              user="root", group="root", mode="755")


@deploy("Release switch script (the login user's copy)")
def user_switch_script(path: str):
    """Install `release-switch` at `path` (and the modules it imports into `path`/../../lib),
    owned by the login user (no root: an @local deploy as the operator, whose /opt/infra is
    not writable); 0700."""
    from pyinfra.operations import files

    from deploys.templating import TEMPLATES

    bin_dir = path.rsplit("/", 1)[0]
    files.directory(name=bin_dir, path=bin_dir, present=True, mode="700")
    files.put(name=path, src=str(TEMPLATES / SWITCH_SCRIPT.lstrip("/")), dest=path, mode="700")
    # what the script imports from its sibling lib/ (templates/opt/infra/lib, as /opt/infra/lib)
    lib_dir = f"{bin_dir.rsplit('/', 1)[0]}/lib"
    for module in sorted((TEMPLATES / "opt/infra/lib").glob("*.py")):
        files.put(name=f"{lib_dir}/{module.name}", src=str(module), dest=f"{lib_dir}/{module.name}", mode="600",
                  create_remote_dir=True)


def plan_path(root: str) -> str:
    return f"{root}/releases/.switch-plan.json"


def journal_path(root: str) -> str:
    """Where release-switch journals a switch in progress (removed when it ends)."""
    return f"{root}/releases/.switch.json"


def switch_cut_off(root: str) -> bool:
    """A host-side switch under `root` was itself cut off (its unit killed, the host
    rebooted): its journal is left. Only release-switch may finish or roll it back, so the
    next run must run it even when the live links already are the wanted ones; left alone,
    the journal is acted on by some later switch, which would then restore the data backed
    up before that switch and set aside everything written since."""
    from pyinfra.facts.files import File

    return bool(host.get_fact(File, path=journal_path(root)))


def switch_plan(root: str, names: list[str], components: list[Component], data: HostData | None, switch: Switch,
                keep: int, cleanup: str, on_host: HostSwitch) -> dict:
    """The plan `release-switch run` reads (see its docstring)."""
    for c in components:
        for hook in (c.stop, c.start, c.gate):
            if hook is not None and not isinstance(hook, str):
                raise ConfigError(f"release switch on the host: {c.name}'s hooks must be command lines")
    return {
        "root": root, "names": list(names),
        "components": [{"name": c.name, "rid": c.rid, "stop": c.stop or "", "start": c.start or "",
                        "gate": c.gate or "", "report": c.report or ""} for c in components],
        "data": {"backup": data.backup, "restore": data.restore, "prepare": data.prepare} if data else None,
        "cleanup": cleanup or "", "keep": int(keep), "action": switch.action, "meta": dict(switch.meta),
        "hook_timeout_s": on_host.hook_timeout_s, "gate_timeout_s": on_host.gate_timeout_s,
        "gate_interval_s": on_host.gate_interval_s,
    }


def _switch_on_host(state, host, command, unit):
    # (FunctionCommand passes the pyinfra state and host when the parameters have these names)
    ok, output = host.run_shell_command(command, **connector_arguments(host))
    for line in list(output.stdout_lines) + list(output.stderr_lines):
        host.log(line)
    if not ok:
        host.log(f"the release switch failed (unit {unit}.service; its output is above)")
    return ok


@operation()
def releases_switched_on_host(
    root: str,
    names: list[str],
    components: list[Component],
    on_host: HostSwitch,
    data: HostData | None = None,
    switch: Switch | None = None,
    keep: int = 3,
    cleanup: str = "",
):
    """`releases_switched`, run on the host by `release-switch` in the unit `on_host.unit`
    (install it with `switch_script`). Nothing when `components` are live and no earlier
    switch was cut off (`switch_cut_off`); a live release the history lacks is recorded
    first, here or by the script."""
    from deploys.parts.host_steps import host_step  # (host_steps imports nothing from here)

    st = read(root, names)
    before = current_components(st, names)
    changes = [c for c in components if before.get(c.name) != c.rid]
    cut_off = switch_cut_off(root)
    if cut_off:  # release-switch finishes or rolls back that switch first, then switches (or not)
        (host.log if state.is_executing else host.noop)(
            f"an earlier switch under {root} was cut off ({journal_path(root)} is left): the switch runs to finish or "
            "roll it back")
    elif not changes:
        if missing := unrecorded_live(st, names):
            (host.log if state.is_executing else host.noop)(
                f"release {missing['id']} is live but not in the history (a run was cut off after its switch): recorded")
            yield StringCommand(history_line(root, missing))
            return
        host.noop(f"release {app_id(before)} is live")
        return
    if not state.is_executing and changes:
        host.noop("will switch on the host " + ", ".join(f"{c.name} {before.get(c.name) or 'nothing'} -> {c.rid}" for c in changes))
    plan = switch_plan(root, names, components, data, switch or Switch(), keep, cleanup, on_host)
    path = plan_path(root)
    yield StringCommand(f"mkdir -p {q(root + '/releases')} && (umask 077 && printf '%s\\n' {q(json.dumps(plan, sort_keys=True))} "
                        f"> {q(path + '.new')}) && mv -f {q(path + '.new')} {q(path)}")
    step = host_step(on_host.unit, ["python3", on_host.script, "run", path], f"release switch under {root}",
                     timeout_s=on_host.timeout_s(2 * len(components) if cut_off else len(changes), data is not None), scope=on_host.scope, log=on_host.log)
    yield FunctionCommand(_switch_on_host, (step, on_host.unit), {})


# ----------------------------------------------------------------------------- rollback, report


def rollback_target(st: dict, names: list[str], to: str | None) -> dict:
    """The history entry to go back to: `to` (an id or unique prefix), else the release
    before the live one. ConfigError naming the choices when there is none."""
    live = app_id(current_components(st, names))
    entries = [e for e in history_entries(st) if available(st, e)]
    choices = ", ".join(e["id"] for e in entries if e["id"] != live) or "none"
    if to:
        found = [e for e in entries if e["id"].startswith(str(to))]
        if len(found) != 1:
            raise ConfigError(f"rollback: no single kept release matches {to!r} (kept: {choices}; live: {live})")
        return found[0]
    older = [e for e in entries if e["id"] != live]
    if not older:
        raise ConfigError(f"rollback: there is no earlier release to go back to (live: {live})")
    return older[0]


@operation(is_idempotent=True)
def releases_report(root: str, names: list[str], title: str = ""):
    """Log the kept releases, the live one marked (`make releases`); change nothing."""
    if not state.is_executing:
        host.noop("releases are listed when the deploy runs")
        return
    for line in report_lines(read(root, names), names, title):
        host.log(line)
    host.noop("releases listed")
    return
    yield  # pragma: no cover


# ----------------------------------------------------------------------------- series (what operators see)


RELEASE_ACTIONS = ("releases", "rollback")


@dataclass(frozen=True)
class Series:
    """A release series as operators see it (`make releases DEPLOY=x`, `make rollback
    DEPLOY=x [TO=id]`): kept releases under `<root>/releases/<name>/<id>/` (`.complete`
    written last, `release.json` beside it) and `<root>/releases/history.jsonl`, one JSON
    line per switch (`history_entry`). A deploy whose switch runs on the host (a script in
    a transient unit) shares the listing and the choice of a rollback target by writing
    that layout; only its own switch differs."""

    title: str
    root: str
    names: tuple[str, ...]


def rollback_choice(series: list[Series], to: str | None) -> tuple[Series, dict]:
    """`make rollback [TO=id]`: the first series' release before the live one, or the kept
    release of any series whose id starts with `to`; one ConfigError naming the choices of
    every series otherwise."""
    problems = []
    for s in series if to else series[:1]:
        try:
            return s, rollback_target(read(s.root, list(s.names)), list(s.names), to)
        except ConfigError as exc:
            problems.append(f"{s.title}: {exc}" if len(series) > 1 else str(exc))
    raise ConfigError("; ".join(problems))


def release_action(action: str | None, series: list[Series], to: str | None, go_back: Callable[[Series, dict], None]) -> bool:
    """`release_action` of a deploy run: "releases" lists every series (changes nothing),
    "rollback" picks the target (`rollback_choice`) and calls `go_back(series, target)`,
    the deploy's own switch (releases_switched, or its host-side step). False: not a
    release action (a normal run)."""
    if action not in RELEASE_ACTIONS:
        return False
    if action == "releases":
        for s in series:
            releases_report(name=f"{s.title} releases" if s.title else "Releases", root=s.root, names=list(s.names), title=s.title)
    else:
        go_back(*rollback_choice(series, to))
    return True
