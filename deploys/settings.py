"""Typed settings: every knob is declared once, in group_data/, and checked before connecting.

A knob is a module-level name in a `group_data/<group>.py` file. It is declared by the
most general file that sets it (all < kinds < systems < environments): its type is its
annotation there (`hello_port: Port = 8080`), or else the type of the values the files
give it (`None` in one file and a string in another: an optional string); an int knob
whose name ends in `_port` is a `Port`. Its documentation is the block of `#` comment
lines just above it. A sixth system declares its knobs the same way, in its own file.

`check()` runs from inventory.py, before pyinfra connects anywhere: the inventory's host
data and every `--data` value are matched against the declarations. An unknown name
("did you mean ...?"), a wrong type, a value out of range, or a control character in a
string (it would reach a unit file, a config file or a shell) is a problem; all problems
are raised in one `ConfigError`, which pyinfra prints without a traceback.

    python -m deploys.settings [group]     # every knob: type, default, where, comment
"""

from __future__ import annotations

import ast
import difflib
import json
import re
import runpy
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploys.errors import ConfigError

GROUP_DATA = Path(__file__).resolve().parent.parent / "group_data"

# Data the inventory itself attaches to test hosts (tests/harness inventory.json).
HARNESS_KEYS = {"test_address", "test_dns_server"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # Text: newlines and tabs allowed


class Constraint:
    """A knob type with a check of its own; usable as an annotation in group_data."""

    name = "value"
    base: type | tuple[type, ...] = object

    def problem(self, value: Any) -> str | None:
        return None


class _Port(Constraint):
    name = "port (1-65535)"
    base = int

    def problem(self, value: Any) -> str | None:
        return None if 0 < value < 65536 else f"{value} is not a TCP port (1-65535)"


class _Text(Constraint):
    """A string that may span lines (a script or config snippet)."""

    name = "text"
    base = str


class _Count(Constraint):
    """A whole number of at least 1 (how many releases or backups to keep)."""

    name = "count (a whole number >= 1)"
    base = int

    def problem(self, value: Any) -> str | None:
        return None if value >= 1 else f"{value} is not a count (1 or more)"


Port = _Port()
Text = _Text()
Count = _Count()
TYPE_ORDER = (bool, int, float, str, list, dict)
_FAMILY_ORDER = ("all", "native_vm", "docker_host", "linode", "local")
_ENVIRONMENT_GROUPS = ("prod", "staging", "test")


@dataclass
class Knob:
    name: str
    declared_in: str
    default: Any
    comment: str = ""
    annotation: Any = None
    seen_types: set[type] = field(default_factory=set)

    @property
    def type_name(self) -> str:
        if self.annotation is not None:
            return _annotation_name(self.annotation)
        names = [t.__name__ for t in TYPE_ORDER if t in self.seen_types]
        if self.is_port:
            names = ["port (1-65535)" if n == "int" else n for n in names]
        if not names:
            return "any"
        return " or ".join(names) + (" or None" if type(None) in self.seen_types else "")

    @property
    def is_port(self) -> bool:
        return self.name.endswith("_port") and self.seen_types - {type(None)} == {int}

    def problem(self, value: Any) -> str | None:
        """Why `value` does not fit this knob, or None."""
        if self.annotation is not None:
            return _annotation_problem(self.annotation, value)
        kinds = self.seen_types - {type(None)}
        if not kinds:
            return None  # only ever None: any value
        if value is None:
            return None if type(None) in self.seen_types else f"expected {self.type_name}, got None"
        if not any(_is_instance(value, kind) for kind in kinds):
            return f"expected {self.type_name}, got {value!r} ({type(value).__name__})"
        if self.is_port:
            return Port.problem(value)
        return None


def _is_instance(value: Any, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _annotation_name(annotation: Any) -> str:
    if isinstance(annotation, Constraint):
        return annotation.name
    if isinstance(annotation, (types.UnionType,)) or typing.get_origin(annotation) is typing.Union:
        return " or ".join(_annotation_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", None) or str(annotation)


def _annotation_problem(annotation: Any, value: Any) -> str | None:
    if annotation is Any:
        return None
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        results = [_annotation_problem(a, value) for a in typing.get_args(annotation)]
        if any(r is None for r in results):
            return None
        return next((r for r in results if not r.startswith("expected")), None) or (
            f"expected {_annotation_name(annotation)}, got {value!r} ({type(value).__name__})")
    if annotation is type(None):
        return None if value is None else f"expected None, got {value!r}"
    if isinstance(annotation, Constraint):
        if not _is_instance(value, annotation.base):
            return f"expected {annotation.name}, got {value!r} ({type(value).__name__})"
        return annotation.problem(value)
    origin = typing.get_origin(annotation) or annotation
    if isinstance(origin, type) and not _is_instance(value, origin):
        return f"expected {_annotation_name(annotation)}, got {value!r} ({type(value).__name__})"
    args = typing.get_args(annotation)
    if origin is list and args:
        for index, item in enumerate(value):
            if problem := _annotation_problem(args[0], item):
                return f"item {index}: {problem}"
    return None


def control_character_problem(value: Any, allow_lines: bool = False) -> str | None:
    """A control character anywhere in a string (nested lists/dicts included)."""
    pattern = _CONTROL_TEXT if allow_lines else _CONTROL
    if isinstance(value, str):
        if match := pattern.search(value):
            return f"contains the control character {match.group()!r}"
    elif isinstance(value, dict):
        for key, item in value.items():
            if problem := control_character_problem(key) or control_character_problem(item, allow_lines):
                return problem
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            if problem := control_character_problem(item, allow_lines):
                return problem
    return None


def _group_rank(group: str) -> tuple[int, str]:
    """Most general first: all, kinds, systems, environments."""
    if group in _FAMILY_ORDER:
        return (_FAMILY_ORDER.index(group), group)
    if group in _ENVIRONMENT_GROUPS:
        return (100, group)
    return (50, group)


def _comments(source: str) -> dict[str, str]:
    """Name -> the `#` comment block directly above its assignment."""
    lines = source.splitlines()
    found, previous = {}, ""
    for node in ast.parse(source).body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        block = []
        row = node.lineno - 2
        while row >= 0 and lines[row].lstrip().startswith("#"):
            block.insert(0, lines[row].lstrip()[1:].strip())
            row -= 1
        # Lines grouped under one comment share it: `# Service account and unit name.`
        comment = " ".join(block) if block else (previous if row >= 0 and lines[row].strip() else "")
        previous = comment
        for name in targets:
            found[name] = comment
    return found


def _imported_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def group_files(directory: Path = GROUP_DATA, comments: bool = True) -> dict[str, dict[str, Any]]:
    """Group -> {name: value} plus 'annotations' and 'comments' (empty when not asked: only
    `describe` shows them) for each file."""
    groups = {}
    for path in sorted(directory.glob("*.py"), key=lambda p: _group_rank(p.stem)):
        source = path.read_text()
        namespace = runpy.run_path(str(path))
        imported = _imported_names(source)  # as pyinfra drops them from group data
        values = {k: v for k, v in namespace.items() if not k.startswith("__") and k not in imported}
        groups[path.stem] = {
            "values": values,
            "annotations": dict(namespace.get("__annotations__", {})),
            "comments": _comments(source) if comments else {},
        }
    return groups


def declarations(directory: Path = GROUP_DATA, groups: dict[str, dict[str, Any]] | None = None) -> dict[str, Knob]:
    """Every knob of every group file, declared where it first appears (most general)."""
    knobs: dict[str, Knob] = {}
    for group, content in (group_files(directory) if groups is None else groups).items():
        for name, value in content["values"].items():
            knob = knobs.get(name)
            if knob is None:
                knob = knobs[name] = Knob(name, group, value, content["comments"].get(name, ""))
            if name in content["annotations"] and knob.annotation is None:
                knob.annotation = content["annotations"][name]
            knob.seen_types.add(bool if isinstance(value, bool) else type(value))
    return knobs


def connector_keys() -> set[str]:
    """Host data pyinfra itself reads: connector settings and global arguments."""
    from pyinfra.api.arguments import all_global_arguments
    from pyinfra.api.connectors import get_all_connectors

    keys = {name for name, _ in all_global_arguments()}
    for connector in get_all_connectors().values():
        keys |= set(getattr(connector, "data_meta", {}) or {})
    return keys


def parse_cli_arg(value: str) -> Any:
    """What pyinfra makes of a `--data` value (pyinfra_cli.util.parse_cli_arg, 3.10).

    Copied rather than imported: importing pyinfra_cli monkey-patches ssl (gevent).
    """
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return json.loads(value)
    except ValueError:
        return value


def cli_data_value(value: Any) -> str:
    """The `--data key=<this>` text that pyinfra reads back as `value` (a string that looks
    like a number, a bool or JSON is passed as a JSON string)."""
    if isinstance(value, str) and parse_cli_arg(value) == value:
        return value
    return json.dumps(value)


def cli_overrides(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """`--data key=value` pairs as pyinfra parses them, and malformed ones."""
    raw, problems = [], []
    args = iter(argv[1:])
    for arg in args:
        if arg == "--data":
            raw.append(next(args, ""))
        elif arg.startswith("--data="):
            raw.append(arg[len("--data="):])
    values = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            problems.append(f"--data {item!r}: expected key=value")
            continue
        values[key] = parse_cli_arg(value)
    return values, problems


def value_problems(knobs: dict[str, Knob], values: dict[str, Any], where: str,
                   extra_keys: set[str]) -> list[str]:
    """Problems of one source of values (a host's data, --data, a group file)."""
    problems = []
    for name, value in values.items():
        knob = knobs.get(name)
        if knob is None:
            if name in extra_keys:
                continue
            close = difflib.get_close_matches(name, list(knobs), n=1, cutoff=0.75)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{name} ({where}): unknown knob{hint}")
            continue
        allow_lines = knob.annotation is Text
        problem = knob.problem(value) or control_character_problem(value, allow_lines)
        if problem and where == "--data" and isinstance(value, (int, float)) and "expected str" in problem:
            problem += f"; pyinfra reads a number there, quote it as JSON: --data '{name}=\"{value}\"'"
        if problem:
            problems.append(f"{name} ({where}): {problem}")
    return problems


def check(hosts: list, argv: list[str], directory: Path = GROUP_DATA) -> None:
    """Raise one ConfigError naming every problem in host data and --data values."""
    groups = group_files(directory, comments=False)  # each file run once per check, not once per use
    knobs = declarations(directory, groups)
    extra = connector_keys() | HARNESS_KEYS
    problems = []
    for group, content in groups.items():
        for name, value in content["values"].items():
            knob = knobs[name]
            problem = knob.problem(value) or control_character_problem(value, knob.annotation is Text)
            if problem:
                problems.append(f"{name} (group_data/{group}.py): {problem}")
    for spec in hosts:
        problems += value_problems(knobs, spec.data, f"host {spec.name}", extra)
    overrides, malformed = cli_overrides(argv)
    problems += malformed
    problems += value_problems(knobs, overrides, "--data", extra)
    if problems:
        raise ConfigError(f"settings: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))


def describe(group: str | None = None, directory: Path = GROUP_DATA) -> str:
    """A table of the knobs (of one group, or all): name, type, default, where, comment."""
    rows = []
    for knob in sorted(declarations(directory).values(), key=lambda k: (_group_rank(k.declared_in), k.name)):
        if group and knob.declared_in != group:
            continue
        rows.append(f"{knob.name}: {knob.type_name} = {knob.default!r}  [{knob.declared_in}]"
                    + (f"\n    {knob.comment}" if knob.comment else ""))
    return "\n".join(rows)


if __name__ == "__main__":
    print(describe(sys.argv[1] if len(sys.argv) > 1 else None))
