"""An idempotent Docker Compose stack, for compose v2 (`docker compose`) and v1 (`docker-compose`).

pyinfra's own `docker.compose` runs `docker compose up -d` every time (always a change)
and knows only v2. `compose_stack` instead:

1. reads the host: the compose CLI it has (`facts.compose.ComposeCli`, or the
   `docker_compose_cli` knob), the SHA-256 of the compose file (and of the env file when
   it manages one), and the project's services (`facts.compose.ComposeServices`, from
   container labels: v1 and v2 alike);
2. reports "no change" when both files are as wanted, every expected service runs and
   no operation in `recreate_when` changed anything;
3. otherwise stages the new files next to the live ones (`*.new`; the env file 0600 from
   the start), validates them with `<cli> config -q` - a file compose rejects is removed
   and never replaces the live one - moves them into place, and runs `up -d
   --remove-orphans`.

`compose_health_gate` then waits (bounded) until every expected service runs and its
healthcheck (if any) says healthy, and fails with each service's last state otherwise.

`to_yaml` writes compose files from plain data (dicts, lists, scalars) without PyYAML:
every string is a double-quoted scalar, so nothing is ever re-typed by YAML. A `Tagged`
value carries a YAML tag (compose v2's `!override` / `!reset`).

The user's own compose file plus an override (`-f theirs.yml -f ours.yml`): compose merges
them, so the stack stays the one upstream wrote and only what the plan changes is ours.
`compose_outline` reads the services and published ports of theirs (block-style YAML, as
compose files are written; no PyYAML here), `loopback_ports` rebinds published ports to one
address, and `override_document` assembles the override. `ports: !override` needs compose
v2 >= 2.24.4: compose v1 (and older v2) append override ports to theirs instead, so
`override_cli_problem` refuses them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.context import state
from pyinfra.facts.files import Sha256File

from deploys.errors import ConfigError
from deploys.operations import secret_file, wait_until
from facts.compose import ComposeCli, ComposeServices, unhealthy_services

CLIS = ("docker compose", "docker-compose")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Values that mean the same to compose v1 (python-dotenv) and v2 in an env file, unquoted.
_ENV_VALUE = re.compile(r"^[A-Za-z0-9_\-.:/+=@,%~^]*$")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")


# ----------------------------------------------------------------------------- rendering


class Tagged:
    """A value written with a YAML tag: `Tagged("!override", [...])` -> `key: !override`."""

    def __init__(self, tag: str, value):
        self.tag, self.value = tag, value

    def __eq__(self, other):
        return isinstance(other, Tagged) and (self.tag, self.value) == (other.tag, other.value)

    def __repr__(self):
        return f"Tagged({self.tag!r}, {self.value!r})"


def _scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def _key(key) -> str:
    text = str(key)
    return text if _PLAIN_KEY.match(text) and text.lower() not in ("true", "false", "null", "yes", "no", "on", "off") else json.dumps(text)


def _lines(value, indent: int) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, Tagged):
                inner = item.value
                if isinstance(inner, (dict, list)) and inner:
                    out.append(f"{pad}{_key(key)}: {item.tag}")
                    out += _lines(inner, indent + 1)
                else:
                    out.append(f"{pad}{_key(key)}: {item.tag} {_empty_or_scalar(inner)}")
            elif isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{_key(key)}:")
                out += _lines(item, indent + 1)
            else:
                out.append(f"{pad}{_key(key)}: {_empty_or_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = _lines(item, indent + 1)
                out.append(f"{pad}- {nested[0].lstrip()}")
                out += nested[1:]
            else:
                out.append(f"{pad}- {_empty_or_scalar(item)}")
    else:
        out.append(pad + _scalar(value))
    return out


def _empty_or_scalar(item) -> str:
    if isinstance(item, dict):
        return "{}"
    if isinstance(item, list):
        return "[]"
    return _scalar(item)


def to_yaml(document: dict, header: str = "") -> str:
    """Block-style YAML of plain data; `header` lines become comments."""
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) if header else ""
    return comments + "\n".join(_lines(document, 0)) + "\n"


def env_file_text(values: dict[str, object], header: str = "") -> str:
    """`KEY=value` lines compose v1 and v2 read alike (no quotes, no `$`, no spaces)."""
    problems = []
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    for key, value in values.items():
        raw = value.unmask() if isinstance(value, HiddenValue) else ("" if value is None else str(value))
        if not _ENV_KEY.match(key):
            problems.append(f"{key!r} is not a valid variable name")
        elif not _ENV_VALUE.match(raw):
            # never echo the value: it may be a secret
            problems.append(f"{key} holds characters compose v1/v2 read differently (quotes, spaces, $, #, \\)")
        lines.append(f"{key}={raw}")
    if problems:
        raise ConfigError("env file: " + "; ".join(problems))
    return "".join(line + "\n" for line in lines)


def cli_args(cli: str, project: str, compose_path: str | list[str], env_path: str | None,
             profiles: Iterable[str] = (), project_directory: str | None = None) -> list:
    """`<cli> -p PROJECT [--project-directory D] -f FILE [-f FILE]... [--env-file ENV]
    [--profile P]...` (same for v1 and v2)."""
    if cli not in CLIS:
        raise ConfigError(f"compose CLI {cli!r} is not one of {CLIS}")
    args: list = [*cli.split(), "-p", QuoteString(project)]
    if project_directory:
        args += ["--project-directory", QuoteString(project_directory)]
    for path in [compose_path] if isinstance(compose_path, str) else compose_path:
        args += ["-f", QuoteString(path)]
    if env_path:
        args += ["--env-file", QuoteString(env_path)]
    for profile in profiles:
        args += ["--profile", QuoteString(profile)]
    return args


_SERVICE = re.compile(r"^(\s+)([A-Za-z0-9._-]+):\s*(#.*)?$")
_TOP = re.compile(r"^([A-Za-z0-9_-]+):")
_ITEM = re.compile(r"^\s*-\s*(.+?)\s*(#.*)?$")
_BUILD_KEY = re.compile(r"^(\s+)build:\s*(.*)$")


def compose_outline(text: str) -> dict[str, dict]:
    """{service: {"ports": ["8086:8086", ...]}} of a block-style compose file.

    Enough to write an override for it; compose itself validates the merged result on the
    host (`config`), so a file this reader misreads fails there, never silently.
    """
    services: dict[str, dict] = {}
    in_services, indent, current, in_ports, ports_indent = False, None, None, False, 0
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _TOP.match(line):
            in_services, current, in_ports = line.startswith("services:"), None, False
            continue
        if not in_services:
            continue
        lead = len(line) - len(line.lstrip())
        match = _SERVICE.match(line)
        if match and (indent is None or lead == indent):
            indent, current, in_ports = lead, match.group(2), False
            services[current] = {"ports": []}
            continue
        if current is None:
            continue
        if line.strip() == "ports:":
            in_ports, ports_indent = True, lead
            continue
        if in_ports:
            item = _ITEM.match(line)
            if item and lead >= ports_indent:
                services[current]["ports"].append(item.group(1).strip("'\""))
                continue
            in_ports = False
    if not services:
        raise ConfigError("compose file: no services found (a block-style `services:` mapping is expected)")
    return services


def build_sections(text: str) -> dict[str, list[str]]:
    """{service: the lines of its `build:` (dedented; `build: .` -> ["."])} of a block-style
    compose file: what compose builds the image from (context, dockerfile, args, target).
    Part of the rebuild key, so a change to the user's own build args rebuilds."""
    out: dict[str, list[str]] = {}
    in_services, indent, current, build_lead = False, None, None, None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _TOP.match(line):
            in_services, current, build_lead = line.startswith("services:"), None, None
            continue
        if not in_services:
            continue
        lead = len(line) - len(line.lstrip())
        match = _SERVICE.match(line)
        if match and (indent is None or lead == indent):
            indent, current, build_lead = lead, match.group(2), None
            continue
        if current is None:
            continue
        if build_lead is not None and lead > build_lead:
            out[current].append(line[build_lead + 1:].rstrip())
            continue
        build_lead = None
        key = _BUILD_KEY.match(line)
        if key:
            value = key.group(2).split(" #")[0].strip()
            out[current] = [value] if value else []
            build_lead = None if value else lead
    return out


def build_args(lines: list[str]) -> dict[str, str]:
    """The `args:` of a build section (mapping or `- KEY=value` list; quotes stripped)."""
    args: dict[str, str] = {}
    args_lead = None
    for line in lines:
        lead = len(line) - len(line.lstrip())
        if line.strip() == "args:":
            args_lead = lead
            continue
        if args_lead is None:
            continue
        if lead <= args_lead:
            args_lead = None
            continue
        item = line.strip()
        if item.startswith("- "):
            key, _, value = item[2:].strip().strip("'\"").partition("=")
        else:
            key, _, value = item.partition(":")
        args[key.strip()] = value.strip().strip("'\"")
    return args


def loopback_ports(ports: Iterable[str], address: str) -> list[str]:
    """Published ports rebound to `address`: "8086:8086" -> "127.0.0.1:8086:8086"; a port
    published on no host port (`"80"`: a random one) gets `address::80`."""
    out = []
    for port in ports:
        spec = str(port)
        proto = ""
        if "/" in spec:
            spec, proto = spec.split("/", 1)
            proto = "/" + proto
        parts = spec.rsplit(":", 2) if spec.count(":") >= 2 else spec.split(":")
        if len(parts) == 3:
            parts = parts[1:]
        host, container = (parts if len(parts) == 2 else ("", parts[0]))
        out.append(f"{address}:{host}:{container}{proto}")
    return out


def override_cli_problem(cli: str | None, version: str | None) -> str | None:
    """Why this compose CLI cannot replace theirs' ports with an override, or None."""
    if cli == "docker-compose":
        return ("compose v1 (docker-compose) appends an override's ports to the original's, so the "
                "published ports cannot be moved to loopback: install compose v2 >= 2.24.4")
    if cli == "docker compose" and version:
        nums = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
        if nums and nums < (2, 24, 4):
            return f"compose {version} has no `!override` (needs 2.24.4 or later) to move published ports to loopback"
    return None


def override_document(services: dict[str, dict], header_volumes: dict | None = None,
                      networks: dict | None = None) -> dict:
    """An override compose file: only the keys given per service (ports as `!override`)."""
    out: dict = {"services": {}}
    for name, spec in services.items():
        entry = dict(spec)
        if "ports" in entry:
            entry["ports"] = Tagged("!override", list(entry["ports"]))
        out["services"][name] = entry
    if header_volumes:
        out["volumes"] = header_volumes
    if networks:
        out["networks"] = networks
    return out


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _raw(value) -> str | None:
    if value is None:
        return None
    if callable(value):
        value = value()
    return value.unmask() if isinstance(value, HiddenValue) else str(value)


def detected_cli() -> str | None:
    """The compose CLI to use on this host: the `docker_compose_cli` knob, else detected."""
    forced = host.data.get("docker_compose_cli")
    if forced:
        if forced not in CLIS:
            raise ConfigError(f"docker_compose_cli {forced!r} is not one of {CLIS}")
        return forced
    return host.get_fact(ComposeCli)


def _changed(ops) -> bool:
    """Did (at execution) / will (when planning) any of these operations change the host?"""
    if state.is_executing:
        return any(op.did_change() for op in ops)
    return any(op.will_change for op in ops)


def fail_command(message: str) -> StringCommand:
    """A command that fails the operation with `message` on stderr (pyinfra shows it)."""
    return StringCommand("echo", QuoteString(message), ">&2", "&&", "false")


# ----------------------------------------------------------------------------- operations


def stage_and_validate(cli, project, directory, compose_file, compose, env_file, env_raw, profiles,
                       compose_sha, env_sha):
    """Commands: write `*.new` files for what differs, `config -q`, move them into place.

    A config compose rejects removes the `*.new` files and fails with compose's error;
    the live files stay as they were.
    """
    compose_path = f"{directory}/{compose_file}"
    env_path = f"{directory}/{env_file}" if env_file else None
    yield StringCommand("mkdir", "-p", QuoteString(directory))
    new_compose = compose_path + ".new" if compose_sha != _sha(compose) else None
    new_env = env_path + ".new" if env_raw is not None and env_sha != _sha(env_raw) else None
    if new_compose:
        yield FileUploadCommand(BytesIO(compose.encode()), new_compose)
        yield StringCommand("chmod", "644", QuoteString(new_compose))
    if new_env:
        yield StringCommand("rm", "-f", QuoteString(new_env))
        yield from secret_file._inner(dest=new_env, content=HiddenValue(env_raw))
    if not (new_compose or new_env):
        return
    check = cli_args(cli, project, new_compose or compose_path, new_env or env_path, profiles)
    staged = [QuoteString(p) for p in (new_compose, new_env) if p]
    moves: list = []
    for new in (new_compose, new_env):
        if new:
            moves += ["mv", "-f", QuoteString(new), QuoteString(new[: -len(".new")]), "&&"]
    yield StringCommand(
        "cd", QuoteString(directory), "&&",
        "if ! out=$(", *check, "config -q 2>&1); then",
        "rm -f", *staged, ";",
        "echo", QuoteString(f"compose rejected the new config of {project} (the live files are unchanged):"), ">&2;",
        'echo "$out" >&2; exit 1; fi', "&&", *moves[:-1],
    )


@operation()
def compose_stack(
    project: str,
    directory: str,
    compose: str,
    compose_file: str = "docker-compose.yml",
    env: str | HiddenValue | Callable | None = None,
    env_file: str | None = None,
    services: Iterable[str] = (),
    profiles: Iterable[str] = (),
    recreate_when: Iterable = (),
    if_up_fails: Callable[[], str | None] | None = None,
):
    """The compose project `project` runs `compose` (+ env) from `directory`; see module doc.

    `env`: content of `env_file` to manage (uploaded 0600, never shown); a callable is
    evaluated when the operation runs. With `env_file` but no `env`, the file is managed
    elsewhere (e.g. assembled on the host) and only passed to compose; list the operations
    that write it in `recreate_when`. `services`: those that must be running (default:
    none checked). `profiles`: compose profiles to enable. `if_up_fails`: called when the
    command is built (at execution); the bash script it returns runs when `up -d` fails and
    decides the operation's result, e.g. the previous release put back (`up -d` waits for
    `depends_on` conditions, so a new image that never gets healthy fails it there, before
    any health gate after this step could roll it back).
    """
    if not _PROJECT.match(project):
        raise ConfigError(f"compose project name {project!r}: use lowercase letters, digits, '-' and '_'")
    profiles, services = list(profiles), list(services)
    cli = detected_cli()
    if cli is None:
        if state.is_executing:
            yield fail_command(f"no compose CLI on {host.name}: neither `docker compose` (v2) nor `docker-compose` (v1)")
            return
        cli = "docker compose"  # planning before docker is installed: assume v2 for the commands
    compose_path = f"{directory}/{compose_file}"
    env_path = f"{directory}/{env_file}" if env_file else None
    env_raw = _raw(env)
    if env_raw is not None and not env_file:
        raise ConfigError("compose_stack: env content given without env_file")
    compose_sha = host.get_fact(Sha256File, path=compose_path)
    env_sha = host.get_fact(Sha256File, path=env_path) if env_path and env_raw is not None else None
    reasons = []
    if compose_sha != _sha(compose):
        reasons.append(f"{compose_file} {'changed' if compose_sha else 'is new'}")
    if env_raw is not None and env_sha != _sha(env_raw):
        reasons.append(f"{env_file} {'changed' if env_sha else 'is new'}")
    running = host.get_fact(ComposeServices, project=project) if cli else {}
    down = [s for s in services if (running.get(s) or {}).get("state") != "running"]
    if down:
        reasons.append(f"not running: {', '.join(down)}")
    if _changed(recreate_when):
        reasons.append("its configuration changed")
    if not reasons:
        host.noop(f"compose project {project} is up to date ({cli})")
        return
    host.log(f"compose project {project} ({cli}): {'; '.join(reasons)}")
    yield from stage_and_validate(cli, project, directory, compose_file, compose, env_file, env_raw,
                                  profiles, compose_sha, env_sha)
    fallback = if_up_fails() if if_up_fails and state.is_executing else None  # it reads results of earlier ops
    yield up_command(cli, project, directory, compose_path, env_path, profiles, fallback)


def up_command(cli: str, project: str, directory: str, compose_path: str, env_path: str | None,
               profiles: list, fallback: str | None = None) -> StringCommand:
    """`up -d` of the project in `directory`; when it fails, the bash script `fallback`
    (if any) runs instead and its exit status is the command's."""
    up = ["cd", QuoteString(directory), "&&", *cli_args(cli, project, compose_path, env_path, profiles),
          "up", "-d", "--remove-orphans"]
    return StringCommand(*up, *(("||", "bash", "-c", QuoteString(fallback)) if fallback else ()))


def compose_check(project: str, services: Iterable[str]):
    """A check for `wait_until`: every service running and (if it has one) healthy."""
    expected = list(services)

    def check():
        problems = unhealthy_services(host.get_fact(ComposeServices, project=project), expected)
        if not problems:
            return True, f"{len(expected)} services running and healthy"
        return False, "; ".join(f"{service}: {reason}" for service, reason in problems.items())

    return check


@deploy("Compose health gate")
def compose_health_gate(project: str, services: Iterable[str], timeout_s: float | None = None):
    """Fail the deploy with each service's last state unless all are healthy in time."""
    services = list(services)
    wait_until(
        name=f"compose project {project}: {len(services)} services running and healthy",
        check=compose_check(project, services),
        description=f"compose project {project}",
        timeout_s=timeout_s or host.data.get("health_timeout_s", 60),
        interval_s=host.data.get("health_interval_s", 2),
    )
