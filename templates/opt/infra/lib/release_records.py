#!/usr/bin/env python3
"""Release records on a host: the one copy of their format (stdlib only, python3 >= 3.8).

Installed as /opt/infra/lib/release_records.py (deploys/parts/release_records.py); the
host-side release scripts import it (music's and youtube's release-switch, ingestor-release)
and hivesync runs it; the controller imports the same file (deploys/parts/releases.py), so
the ids, the history line, the listing and the prune are written once.

Layout under ROOT, one series per component NAME (Capistrano's `releases/` + `current`):

    ROOT/releases/NAME/RID/               one release; release.json, `.complete` written last
    ROOT/NAME -> releases/NAME/RID        the live link, switched atomically (rename)
    ROOT/releases/history.jsonl           one JSON line per switch (`history_entry`)

    release_records.py state ROOT NAMES        the layout as JSON (the Releases fact's shape)
    release_records.py list ROOT NAMES [TITLE] the kept releases, newest first, the live one marked
    release_records.py record ROOT NAME RID [--action A] [--meta JSON] [--backup PATH]
                              [--release JSON] [--field K=V]
                        with --release: release.json (its fields, plus K=V) and `.complete`;
                        then the live link switched to RID and the history line (META and
                        the data backup taken before in it); nothing when RID is live and
                        the history ends with it
    release_records.py prune ROOT NAMES [--keep N] [--probe CMD]
                        drop what `prune_plan` names (--keep), and releases whose probe
                        fails (CMD formatted with their release.json fields, e.g.
                        'docker image inspect {image_id}'); never the live one
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
RECORD_KEYS = ("id", "component", "built_at")  # what `record` adds to a release.json
CUT_OFF_NOTE = "live, but the run that switched to it was cut off before it recorded it; recorded by the next run"


# ----------------------------------------------------------------------------- ids and the history line


def release_id(*parts):
    """Stable 12-hex id of what a release contains: same inputs, same release."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode() + b"\0")
    return digest.hexdigest()[:12]


def app_id(components):
    """The id of a set of component releases (what `make releases` lists)."""
    return release_id("app", sorted(components.items()))


def failure_headline(reason):
    """One line for a failed switch: the reason's first line and, when it goes on (a
    traceback), its last one, which names the error ("File ..., line N" alone does not)."""
    lines = [line.strip() for line in (reason or "").splitlines() if line.strip()]
    status = lines.pop() if len(lines) > 2 and re.match(r"^\(exit -?\d+\)$", lines[-1]) else ""
    if len(lines) < 2:
        return " ".join(lines[:1] + [status]).strip()
    return " ".join([f"{lines[0]} ... {lines[-1]}", status]).strip()


def history_entry(components, before, action, meta=None, backup=None):
    """One history line: id (app_id of `components`), components, action (deploy, rollback,
    adopt, cut-off), at, from (the id before, or None), backup (the data backup taken before
    the switch), plus meta: commit, dirty, by (and what else the deploy records; never in
    place of the keys above: a release.json handed back as meta keeps its `id` out)."""
    return {
        **(meta or {}), "id": app_id(components), "components": dict(components), "action": action,
        "at": time.strftime(TIME_FORMAT), "from": app_id(before) if any(before.values()) else None,
        "backup": backup or None,
    }


def history_line(entry):
    return json.dumps(entry, sort_keys=True)


def parse_history(lines):
    """The entries of history.jsonl lines (a torn or foreign line is skipped)."""
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


# ----------------------------------------------------------------------------- paths, reading


def releases_dir(root):
    return os.path.join(root, "releases")


def release_path(root, name, rid):
    return os.path.join(root, "releases", name, rid)


def history_path(root):
    return os.path.join(root, "releases", "history.jsonl")


def load_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def read_history(root):
    try:
        with open(history_path(root)) as handle:
            return parse_history(handle)
    except OSError:
        return []


def link_target(root, name):
    link = os.path.join(root, name)
    return os.readlink(link) if os.path.islink(link) else None


def live(root, names):
    """{name: the release id its live link points to, or None}."""
    return {n: (os.path.basename(t.rstrip("/")) if (t := link_target(root, n)) else None) for n in names}


def complete(root, name, rid):
    return os.path.exists(os.path.join(release_path(root, name, rid), ".complete"))


def read_release(root, name, rid):
    return load_json(os.path.join(release_path(root, name, rid), "release.json")) or {}


def state_of(root, names):
    """The layout as facts/releases.py's Releases fact reads it: {"components": {name:
    {current, current_target, current_complete, legacy_dir, releases: {rid: {complete,
    meta}}}}, "history": [...]}."""
    out = {"components": {}, "history": read_history(root)}
    for name in names:
        link, base = os.path.join(root, name), os.path.join(root, "releases", name)
        info = {"current": None, "legacy_dir": False, "releases": {}}
        if os.path.islink(link):
            target = os.readlink(link)
            info.update(current=os.path.basename(target.rstrip("/")), current_target=target,
                        current_complete=os.path.exists(os.path.join(link, ".complete")))
        elif os.path.isdir(link):
            info["legacy_dir"] = True
        if os.path.isdir(base):
            for rid in sorted(os.listdir(base)):
                path = os.path.join(base, rid)
                if os.path.isdir(path) and not os.path.islink(path):
                    info["releases"][rid] = {"complete": os.path.exists(os.path.join(path, ".complete")),
                                             "meta": load_json(os.path.join(path, "release.json")) or {}}
        out["components"][name] = info
    return out


def current_components(st, names):
    return {n: (st["components"].get(n) or {}).get("current") for n in names}


# ----------------------------------------------------------------------------- writing


def fsynced_write(path, text, mode="w"):
    with open(path, mode) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def append_history(root, entry):
    os.makedirs(releases_dir(root), exist_ok=True)
    fsynced_write(history_path(root), history_line(entry) + "\n", "a")
    return entry


def set_link(root, name, target):
    """`root/name` -> target (a link's text), or no link when target is None; atomic."""
    link = os.path.join(root, name)
    if target is None:
        if os.path.islink(link):
            os.unlink(link)
        return
    tmp = link + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def switch_link(root, name, rid):
    set_link(root, name, f"releases/{name}/{rid}")


def write_release(root, name, rid, record):
    """release.json (atomically) then `.complete`: a release is complete only once its
    record is whole."""
    path = release_path(root, name, rid)
    os.makedirs(path, exist_ok=True)
    fsynced_write(os.path.join(path, "release.json.tmp"), json.dumps(record, sort_keys=True, indent=1) + "\n")
    os.replace(os.path.join(path, "release.json.tmp"), os.path.join(path, "release.json"))
    with open(os.path.join(path, ".complete"), "w"):
        pass


def record(root, name, rid, action="deploy", meta=None, release=None, backup=None):
    """Make complete release `rid` live: its record written when `release` is given, the
    link switched, the history line appended (in this process, right after the switch).
    None when it is live already and the history ends with it; else the entry."""
    before = live(root, [name])
    history = read_history(root)
    if before[name] == rid and history and history[-1].get("id") == app_id({name: rid}):
        return None
    if release is not None:
        write_release(root, name, rid, {**release, "id": rid, "component": name,
                                        "built_at": release.get("built_at") or time.strftime(TIME_FORMAT)})
    if not complete(root, name, rid):
        raise ValueError(f"{name} release {rid} is not complete: not switched")
    switch_link(root, name, rid)
    meta = {k: v for k, v in (meta or {}).items() if k not in RECORD_KEYS}  # a record's own keys
    return append_history(root, history_entry({name: rid}, before, action, meta, backup))


# ----------------------------------------------------------------------------- a cut-off run


def unrecorded_live(st, names):
    """The history line the live release lacks, when the history does not end with it (a run
    cut off between its link switch and its history line); None when it does, or when the
    live links are not all complete releases of this layout."""
    current = current_components(st, names)
    if not any(current.values()):
        return None
    comps = st.get("components") or {}
    metas = []
    for n, rid in current.items():
        info = (comps.get(n) or {}).get("releases", {}).get(rid) if rid else None
        if rid and not (info and info.get("complete")):
            return None
        if info:
            metas.append(info.get("meta") or {})
    history = st.get("history") or []
    if history and history[-1].get("id") == app_id(current):
        return None
    meta = max(metas, key=lambda m: str(m.get("built_at") or ""), default={})
    return {
        **history_entry(current, {}, "cut-off", {k: meta.get(k) for k in ("commit", "dirty", "by")}),
        "from": history[-1].get("id") if history else None, "note": CUT_OFF_NOTE,
    }


# ----------------------------------------------------------------------------- prune


def pending_release(comp, rid, switched):
    """A complete release never switched to (in no history line) that is not older than the
    live one (release.json `built_at`, to the second; unknown or the same second counts as
    not older): built for a switch still to come (a run cut off between build and switch, a
    switch that failed and the next one), so a prune must leave it."""
    info = (comp.get("releases") or {}).get(rid) or {}
    if not info.get("complete") or rid in switched:
        return False
    built = str((info.get("meta") or {}).get("built_at") or "")
    live_ = str(((comp.get("releases") or {}).get(comp.get("current")) or {}).get("meta", {}).get("built_at") or "")
    return not (built and live_ and built < live_)


def named_backups(root, keep):
    """The data backups the history lines of its last `keep` distinct releases name (a
    rollback to one of them takes its backup back): a backup prune keeps them."""
    seen, named = set(), []
    for entry in reversed(read_history(root)):
        seen.add(entry.get("id"))
        if len(seen) > keep:
            break
        if entry.get("backup"):
            named.append(entry["backup"])
    return named


def prune_plan(st, names, keep, extra_history=()):
    """Releases to delete: all but the live ones, those of the last `keep` distinct history
    entries and pending ones (`pending_release`); incomplete leftovers of failed builds go too."""
    history = list(st.get("history") or []) + list(extra_history)
    kept = {n: set() for n in names}
    seen = []
    for entry in reversed(history):
        if entry.get("id") in seen:
            continue
        seen.append(entry.get("id"))
        if len(seen) > keep:
            break
        for n, rid in (entry.get("components") or {}).items():
            kept.setdefault(n, set()).add(rid)
    plan = {}
    for n in names:
        comp = st["components"].get(n) or {}
        keep_ids = kept.get(n, set()) | {comp.get("current")}
        switched = {(e.get("components") or {}).get(n) for e in history}
        plan[n] = [rid for rid in sorted(comp.get("releases") or {})
                   if rid not in keep_ids and not pending_release(comp, rid, switched)]
    return plan


def unusable(st, names, probe):
    """{name: [rid]} of the releases whose `probe` (a command line formatted with their
    release.json fields, shell-quoted) fails or names a field they lack; never a live one."""
    out = {}
    for n in names:
        comp = st["components"].get(n) or {}
        out[n] = []
        for rid, info in sorted((comp.get("releases") or {}).items()):
            if rid == comp.get("current"):
                continue
            fields = {k: shlex.quote(str(v)) for k, v in (info.get("meta") or {}).items()}
            try:
                command = probe.format(**fields)
            except (KeyError, IndexError, ValueError):
                out[n].append(rid)
                continue
            if subprocess.run(["sh", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
                out[n].append(rid)
    return out


def prune(root, names, keep=None, probe=None, drop=None, say=print):
    """Delete what `prune_plan` (keep) and `unusable` (probe) name: `drop(name, rid, path)`
    first when given (a release's own resources: image tags), then the directory; the live
    release never. {name: [dropped rid]}."""
    st = state_of(root, names)
    plans = [prune_plan(st, names, keep)] if keep is not None else []
    if probe:
        plans.append(unusable(st, names, probe))
    done = {}
    for n in names:
        current = (st["components"].get(n) or {}).get("current")
        rids = sorted({r for plan in plans for r in plan.get(n, []) if r != current})
        for rid in rids:
            path = release_path(root, n, rid)
            if drop:
                drop(n, rid, path)
            shutil.rmtree(path, ignore_errors=True)
        if rids:
            why = f"keeping {keep}" if keep is not None else "not usable any more"
            say(f"pruned {n} releases {', '.join(rids)} ({why})")
        done[n] = rids
    return done


# ----------------------------------------------------------------------------- listing


def history_entries(st):
    """Distinct releases, newest first (the newest switch to an id wins)."""
    seen, out = set(), []
    for entry in reversed(st.get("history") or []):
        if entry.get("id") not in seen:
            seen.add(entry.get("id"))
            out.append(entry)
    return out


def available(st, entry):
    comps = st.get("components") or {}
    return all((comps.get(n) or {}).get("releases", {}).get(rid, {}).get("complete")
               for n, rid in (entry.get("components") or {}).items())


def report_lines(st, names, title=""):
    """`make releases`: the kept releases, newest first, the live one marked."""
    live_id = app_id(current_components(st, names))
    if missing := unrecorded_live(st, names):  # shown now, recorded by the next deploy or rollback
        st = {**st, "history": [*(st.get("history") or []), missing]}
    lines = [f"{title + ' ' if title else ''}releases (newest first; * = live {live_id}):"]
    for e in history_entries(st):
        mark = "*" if e["id"] == live_id else " "
        commit = (e.get("commit") or "?")[:12] + (" (dirty)" if e.get("dirty") else "")
        comps = " ".join(f"{n}={r}" for n, r in sorted((e.get("components") or {}).items()))
        pruned = "" if available(st, e) else "  [pruned]"
        lines.append(f" {mark} {e['id']}  {e.get('at', '?')}  {e.get('action', '?'):<8} commit {commit}  "
                     f"by {e.get('by', '?')}  {comps}{pruned}")
    if len(lines) == 1:
        lines.append("   none yet (deploy first)")
    return lines


# ----------------------------------------------------------------------------- command line


def _options(args, allowed):
    """`--key value` pairs after the positional arguments."""
    positional, options = [], {}
    while args:
        word = args.pop(0)
        if word.startswith("--"):
            if word[2:] not in allowed or not args:
                raise ValueError(f"unknown option or missing value: {word}")
            options[word[2:]] = args.pop(0)
        else:
            positional.append(word)
    return positional, options


def main(argv):
    command, args = (argv[0], list(argv[1:])) if argv else (None, [])
    try:
        if command == "state" and len(args) == 2:
            print(json.dumps(state_of(args[0], args[1].split()), sort_keys=True))
        elif command == "list" and len(args) in (2, 3):
            print("\n".join(report_lines(state_of(args[0], args[1].split()), args[1].split(), *args[2:])))
        elif command == "record":
            (root, name, rid), opts = _options(args, ("action", "meta", "backup", "release", "field"))
            release = json.loads(opts["release"]) if "release" in opts else None
            if release is not None and "field" in opts:
                key, _, value = opts["field"].partition("=")
                release[key] = value
            entry = record(root, name, rid, opts.get("action", "deploy"), json.loads(opts.get("meta", "{}")), release,
                           opts.get("backup"))
            print(f"release {rid} is live and recorded" + (f" ({entry['action']} {entry['id']})" if entry else ""))
        elif command == "prune":
            (root, names), opts = _options(args, ("keep", "probe"))
            prune(root, names.split(), int(opts["keep"]) if "keep" in opts else None, opts.get("probe"))
        else:
            print(__doc__.split("\n\n")[2], file=sys.stderr)
            return 2
    except (ValueError, OSError) as exc:
        print(f"release_records {command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
