"""facts/prefetch_host.py runs each fact as its own child: a `python3 -c` fact in a fork of
the script's interpreter, anything else as `sh -c`. Either way the answer (exit status and
stdout) must be the one `sh -c COMMAND` gives, since that is what pyinfra would read."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from facts import prefetch, prefetch_host
from facts.http import build_command
from facts.system import ListenerUnits


def python_fact(script: str, *args: str) -> str:
    return " ".join(["python3", "-c", *map(shlex.quote, (script, *args))])


def guarded(command: str) -> str:
    """As pyinfra wraps a fact whose requires_command is python3."""
    return f"if command -v python3 >/dev/null 2>&1; then ( {command} ); else echo '##PYINFRA_NOCMD##'; fi"


def run_host_script(tmp_path, commands: list[str], script: str = prefetch.HOST_SCRIPT) -> list:
    env = {**os.environ, "INFRA_STATE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script, "save", "unit"], input=json.dumps({"facts": commands}), text=True,
                   env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", script, "run", "unit"], env=env, check=True, capture_output=True,
                         stdin=subprocess.DEVNULL, timeout=60).stdout
    return json.loads(out)["facts"]


def as_sh_runs_it(command: str) -> list:
    proc = subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return [command, proc.returncode, proc.stdout.decode()]


FACTS = [
    python_fact("import sys; print(sys.argv)", "one", "", "it's \"quoted\" $HOME `x`", "--flag=a,b"),
    python_fact("import sys; sys.exit(3)"),
    python_fact("raise SystemExit('a message')"),
    python_fact("print('before'); raise ValueError('boom')"),
    python_fact("print(__name__, __doc__, 'x' in globals())"),
    python_fact("import sys; print(repr(sys.stdin.read()))"),
    python_fact("import sys; print('out'); print('err', file=sys.stderr); sys.stdout.flush()"),
    python_fact("import atexit; atexit.register(print, 'at exit'); print('main')"),
    python_fact("import subprocess; print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout)"),
    python_fact("print('h\\u00e9llo \\u2713')"),
    python_fact("def broken(:"),
    guarded(python_fact("import os; print(os.getcwd() == os.path.abspath('.'))")),
    guarded(python_fact("print('guarded', end='')")),
    'python3 -c "print(1 + 1)"',  # not quoted as pyinfra quotes: run by sh, same answer
    python_fact("print('x')") + " && echo and",
    "yes | head -n 2",  # SIGPIPE ends `yes`, as under subprocess
    "echo out; exit 4",
]


def test_every_child_answers_as_sh_c_would(tmp_path):
    assert run_host_script(tmp_path, FACTS) == [as_sh_runs_it(command) for command in FACTS]


def test_our_python_facts_run_in_a_fork_and_anything_else_in_sh():
    health = build_command("http://127.0.0.1:1/health", "status", 2, None, "example.com").get_raw_value()
    for command in (python_fact("print(1)", "a b"), guarded(python_fact("print(1)")), health,
                    guarded(health), ListenerUnits().command()):
        assert prefetch_host.python_form(command) is not None, command
    script, argv = prefetch_host.python_form(python_fact("print(1)", "it's", ""))
    assert script == "print(1)" and argv == ["-c", "it's", ""]
    for command in ('python3 -c "print(1)"', python_fact("print(1)") + " && true", "PYTHONPATH=x " + python_fact("1"),
                    python_fact("1").replace(" ", "  "), "python3 -c", "python3 -I -c 'print(1)'", "echo python3 -c 'x'",
                    guarded("echo not python")):
        assert prefetch_host.python_form(command) is None, command


@pytest.mark.parametrize("word", ["", "plain", "a b", "it's", "'", "''", "$(x)", "a\nb", "\u00e9"])
def test_quoting_round_trips_like_shlex(word):
    assert prefetch_host.quote(word) == shlex.quote(word)
    assert prefetch_host.split_quoted(prefetch_host.quote(word)) == [word]


def test_a_child_past_its_time_is_killed_and_the_others_answer(tmp_path):
    script = prefetch.HOST_SCRIPT.replace("TIMEOUT_S = 20", "TIMEOUT_S = 1")
    assert script != prefetch.HOST_SCRIPT
    commands = ["sleep 30", python_fact("import time; time.sleep(30)"), "echo quick"]
    started = time.monotonic()
    assert run_host_script(tmp_path, commands, script) == [
        ["sleep 30", -1, None], [commands[1], -1, None], ["echo quick", 0, "quick\n"]]
    assert time.monotonic() - started < 15


def standard_signals(status_line: str) -> int:
    """A SigIgn/SigBlk mask of /proc/PID/status, signals 1-31 only: glibc's posix_spawn
    leaves its own internal signals (32, 33) ignored, and every new process's libc installs
    their handlers again."""
    return int(status_line.split()[1], 16) & 0x7FFFFFFF


def test_a_shell_command_gets_the_signals_python_ignores_back(tmp_path):
    command = "grep -E '^Sig(Ign|Blk)' /proc/self/status"
    (_, status, out), = run_host_script(tmp_path, [command])
    _, expected_status, expected = as_sh_runs_it(command)
    assert status == expected_status == 0
    assert [standard_signals(line) for line in out.splitlines()] == [standard_signals(line) for line in
                                                                     expected.splitlines()]
    assert all(standard_signals(line) & (1 << 12) == 0 for line in out.splitlines())  # SIGPIPE (13) not ignored
