"""facts/prefetch.py on @local: a seeded fact equals the real one, any change drops the
cache, polls/probes/failures/secrets never come from it, and the host script round-trips
the command list. pyinfra's own fact code runs in both paths; only the transport differs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from queue import Queue

import pytest
from pyinfra.api import Config, FunctionCommand, HiddenValue, Inventory, State, StringCommand
from pyinfra.api.connect import connect_all
from pyinfra.api.facts import FactBase
from pyinfra.connectors.util import read_buffer
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.files import Directory, File, FindFiles, FindLinks, Link, Sha1File, Sha256File
from pyinfra.facts.server import Groups, LinuxDistribution, Os, Users

from facts import prefetch
from facts.restarts import ServiceInputs
from facts.system import PythonVersion

HOST_SCRIPT = prefetch.HOST_SCRIPT


class Fails(FactBase):
    def command(self):
        return "echo partial; exit 3"


class Secretive(FactBase):
    def command(self, token):
        return StringCommand("echo", token)


@pytest.fixture
def local(tmp_path, monkeypatch):
    monkeypatch.setenv("INFRA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("INFRA_FACT_CACHE", raising=False)
    inventory = Inventory((["@local"], {}))
    state = State(inventory=inventory, config=Config())
    connect_all(state)
    host = inventory.get_host("@local")
    with ctx_state.use(state), ctx_host.use(host):
        yield state, host
    prefetch.forget(host)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "app.py").write_text("print('hi')\n")
    (root / "sub" / "data.txt").write_text("x\n")
    (root / "link").symlink_to(root / "app.py")
    return root


def facts_of(tree):
    return [
        (File, {"path": str(tree / "app.py")}), (File, {"path": str(tree / "missing")}),
        (Directory, {"path": str(tree / "sub")}), (Link, {"path": str(tree / "link")}),
        (Sha1File, {"path": str(tree / "app.py")}), (Sha256File, {"path": str(tree / "sub" / "data.txt")}),
        (FindFiles, {"path": str(tree)}), (FindLinks, {"path": str(tree)}),
        (Users, {}), (Groups, {}), (Os, {}), (LinuxDistribution, {}), (PythonVersion, {}),
        (ServiceInputs, {"unit": "x.service", "paths": [str(tree / "app.py"), str(tree / "sub")]}),
    ]


def real(state, host, facts):
    prefetch.forget(host)
    return [host.get_fact(cls, **kwargs) for cls, kwargs in facts]


def learn_and_prefetch(state, host, facts, system="unit"):
    """A first run asks (and saves what it asked), the next run starts from the prefetch."""
    prefetch.prefetch_host(state, host, system)
    for cls, kwargs in facts:
        host.get_fact(cls, **kwargs)
    prefetch.save(host, state)
    prefetch.forget(host)  # the next run
    return prefetch.prefetch_host(state, host, system)


def test_output_lines_split_like_pyinfras_reader():
    for text in ["", "a", "a\n", "a\n\nb\n", "x\r\ny", "\n", "one\ntwo"]:
        queue = Queue()
        read_buffer("stdout", io.StringIO(text), queue)
        assert prefetch.output_lines(text) == [line.line for line in queue.queue], text


def test_seeded_facts_equal_real_facts_and_cost_no_command(local, tree):
    state, host = local
    facts = facts_of(tree)
    real(state, host, facts)  # the first read of a new file moves its atime (relatime)
    expected = real(state, host, facts)
    cache = learn_and_prefetch(state, host, facts)
    assert len(cache.values) == len(cache.known) == len(facts)
    assert [host.get_fact(cls, **kwargs) for cls, kwargs in facts] == expected
    assert (cache.hits, cache.misses) == (len(facts), 0)
    assert cache.changed_list() is None  # a steady run saves nothing


def test_a_fact_read_from_the_host_is_read_again_next_time(local, tree):
    """A loop waiting for the host to change by itself (a process coming up) sees it."""
    state, host = local
    cache = prefetch.prefetch_host(state, host, "unit")
    target = tree / "appears-later"
    assert host.get_fact(File, path=str(target)) is None
    target.write_text("up\n")  # not by this run: no command, no drop
    assert host.get_fact(File, path=str(target))["size"] == 3
    assert (cache.hits, cache.misses) == (0, 2)


def test_a_seeded_fact_asked_twice_is_answered_twice_from_the_seed(local, tree):
    state, host = local
    facts = [(Users, {})]
    cache = learn_and_prefetch(state, host, facts)
    assert host.get_fact(Users) == host.get_fact(Users)
    assert (cache.hits, cache.misses) == (2, 0)


@pytest.mark.parametrize("change", ["command", "function"])
def test_any_change_drops_the_cache(local, tree, change):
    state, host = local
    target = tree / "new.txt"
    facts = [(File, {"path": str(target)}), (Sha1File, {"path": str(tree / "app.py")})]
    cache = learn_and_prefetch(state, host, facts)
    assert host.get_fact(File, path=str(target)) is None  # seeded: not there yet
    if change == "command":
        StringCommand(f"echo changed > {tree}/app.py; touch {target}").execute(state, host, {})
    else:
        FunctionCommand(lambda: (target.touch(), (tree / "app.py").write_text("changed\n")), (), {}).execute(
            state, host, {})
    assert host.get_fact(File, path=str(target))["size"] == 0
    assert host.get_fact(Sha1File, path=str(tree / "app.py")) == real(state, host, facts[1:])[0]
    assert cache.drops == 1


def test_polls_and_probes_go_to_the_host(local, tree):
    state, host = local
    facts = [(File, {"path": str(tree / "app.py")})]
    cache = learn_and_prefetch(state, host, facts)
    with prefetch.live():
        host.get_fact(File, path=str(tree / "app.py"))
    assert cache.hits == 0 and cache.misses == 0  # neither answered nor recorded
    assert "facts.http.HttpHealth" in prefetch.VOLATILE


def test_failures_and_secrets_are_never_cached(local):
    state, host = local
    cache = prefetch.prefetch_host(state, host, "unit")
    assert host.get_fact(Fails, _ignore_errors=True) is None
    assert host.get_fact(Fails, _ignore_errors=True) is None
    assert cache.misses == 2 and not cache.values and cache.seed([["echo partial; exit 3", 3, "partial\n"]]) == 0
    host.get_fact(Secretive, token=HiddenValue("s3cret"))
    assert not any("s3cret" in command for command in cache.asked)


def test_a_second_deploy_file_in_the_same_run_keeps_the_first_cache(local):
    state, host = local
    first = prefetch.prefetch_host(state, host, "unit")
    assert prefetch.prefetch_host(state, host, "other") is first


def test_disabled_by_environment(local, monkeypatch):
    state, host = local
    monkeypatch.setenv("INFRA_FACT_CACHE", "0")
    assert prefetch.prefetch_host(state, host, "unit") is None
    assert prefetch.prefetch_host(state, host, "../etc") is None  # never a path outside its dir


def run_script(tmp_path, *args, stdin=""):
    env = {**os.environ, "INFRA_STATE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", HOST_SCRIPT, *args], input=stdin.encode(), env=env,
                         capture_output=True, check=True).stdout
    return json.loads(out)


def test_host_script_saves_privately_and_runs_each_command(tmp_path):
    commands = ["printf 'a\\n\\nb'", "echo out; echo err >&2; exit 4", "printf '\\377'"]
    assert run_script(tmp_path, "save", "music", stdin=json.dumps(commands)) == {"ok": True}
    saved = tmp_path / "facts" / "music.json"
    assert oct(saved.stat().st_mode & 0o777) == "0o600" and oct(saved.parent.stat().st_mode & 0o777) == "0o700"
    assert run_script(tmp_path, "run", "music") == {"facts": [
        [commands[0], 0, "a\n\nb"], [commands[1], 4, "out\n"], [commands[2], 0, None]], "polls": {}, "clock": None,
        "polled": []}
    assert run_script(tmp_path, "run", "hello")["facts"] == []  # nothing saved yet: nothing run


def test_host_script_keeps_each_operations_poll_and_runs_it_at_once(tmp_path):
    record = {"facts": ["echo fact"], "polls": {"Gate A": ["echo a1", "echo a2; exit 2"], "Gate B": ["echo b"]}}
    assert run_script(tmp_path, "save", "ingestor", stdin=json.dumps(record)) == {"ok": True}
    assert run_script(tmp_path, "run", "ingestor", "echo 12:00") == {
        "facts": [["echo fact", 0, "fact\n"]], "polls": record["polls"], "clock": ["echo 12:00", 0, "12:00\n"],
        "polled": [["echo a1", 0, "a1\n"], ["echo a2; exit 2", 2, "a2\n"], ["echo b", 0, "b\n"]]}
    assert run_script(tmp_path, "poll", "ingestor", "Gate A") == [["echo a1", 0, "a1\n"], ["echo a2; exit 2", 2, "a2\n"]]
    assert run_script(tmp_path, "poll", "ingestor", "Gate C") == []
    (tmp_path / "facts" / "old.json").write_text(json.dumps(["echo listed"]))  # the earlier list-only record
    assert run_script(tmp_path, "run", "old")["facts"] == [["echo listed", 0, "listed\n"]]


def test_host_script_ignores_a_damaged_list(tmp_path):
    (tmp_path / "facts").mkdir()
    (tmp_path / "facts" / "music.json").write_text("{not json")
    assert run_script(tmp_path, "run", "music") == {"facts": [], "polls": {}, "clock": None, "polled": []}


def test_seed_keeps_only_clean_answers():
    cache = prefetch.HostCache("x", "base")
    assert cache.seed([["ok", 0, "a\n"], ["bad", 1, "b"], ["binary", 0, None], ["short"], "junk"]) == 1
    assert cache.values == {("ok", "base"): ["a"]}


def test_verify_mode_answers_from_the_host_and_reports_a_wrong_seed(local, tree, monkeypatch):
    state, host = local
    facts = [(Sha1File, {"path": str(tree / "app.py")}), (File, {"path": str(tree / "app.py")})]
    cache = learn_and_prefetch(state, host, facts)
    (key, _), = [(k, v) for k, v in cache.values.items() if "sha1sum" in k[0]]
    cache.values[key] = ["0" * 40 + "  " + str(tree / "app.py")]  # a stale seed
    monkeypatch.setenv("INFRA_FACT_CACHE", "verify")
    expected = real(state, host, facts[:1])[0]
    cache = learn_and_prefetch(state, host, facts)
    cache.values[key] = ["0" * 40 + "  " + str(tree / "app.py")]
    assert host.get_fact(Sha1File, path=str(tree / "app.py")) == expected
    host.get_fact(File, path=str(tree / "app.py"))
    assert (cache.verified, cache.mismatches) == (2, 1)


def test_volatile_and_measurement_names_are_real_fact_names():
    from pyinfra.facts.server import Date

    from facts.hivesync import R2Buckets
    from facts.http import HttpHealth, HttpHealthMany
    from facts.ingestor import HomeAssistantApi
    from facts.system import FreeDiskMb, MemAvailableMb
    from facts.units import UnitDiagnostics

    assert prefetch.VOLATILE == {f.name for f in (HttpHealth, HttpHealthMany, UnitDiagnostics, HomeAssistantApi,
                                                  R2Buckets, Date)}
    assert prefetch.MEASUREMENTS == {FreeDiskMb.name, MemAvailableMb.name}


def test_nothing_is_wrapped_on_another_pyinfra(monkeypatch):
    from pyinfra.api import facts as pyinfra_facts
    from pyinfra.api.host import Host

    assert prefetch.applicable() is None
    assert prefetch.applicable("3.11.2") == "pyinfra 3.11.2 is not 3.10.x"
    monkeypatch.setattr(prefetch, "_ORIGINAL", {})
    before = (pyinfra_facts._get_fact, Host.run_shell_command, FunctionCommand.execute)
    assert prefetch.install("4.0.0") is False
    assert (pyinfra_facts._get_fact, Host.run_shell_command, FunctionCommand.execute) == before
    monkeypatch.delattr(Host, "rsync")
    assert prefetch.applicable() == "Host.rsync is gone"
    assert prefetch.install() is False


def test_prefetch_is_off_when_pyinfra_is_not_supported(local, monkeypatch):
    state, host = local
    monkeypatch.setattr(prefetch, "_ORIGINAL", {})
    monkeypatch.setattr(prefetch, "applicable", lambda version=None: "pyinfra 9.0 is not 3.10.x")
    assert prefetch.prefetch_host(state, host, "unit") is None
    assert prefetch.cache_for(host) is None


@pytest.mark.parametrize("data", [{"_shell_executable": "bash"}, {"_get_pty": True}])
def test_prefetch_is_off_for_a_host_whose_facts_run_otherwise(tmp_path, monkeypatch, data):
    """The host script runs facts as `sh -c` without a terminal; another shell or a PTY
    would give answers pyinfra's own reading would not (review finding 9)."""
    monkeypatch.setenv("INFRA_STATE_DIR", str(tmp_path / "state"))
    inventory = Inventory((["@local"], data))
    state = State(inventory=inventory, config=Config())
    connect_all(state)
    host = inventory.get_host("@local")
    with ctx_state.use(state), ctx_host.use(host):
        assert prefetch.prefetch_host(state, host, "unit") is None
        assert prefetch.cache_for(host) is None


def test_a_plain_host_reads_facts_like_the_host_script():
    assert prefetch.unlike_a_fact({"_shell_executable": "sh", "_get_pty": False, "_sudo": True}) is None
    assert prefetch.unlike_a_fact({}) is None
    assert "bash" in prefetch.unlike_a_fact({"_shell_executable": "bash"})


def test_host_clock_is_read_by_the_prefetch_and_advanced_by_the_controllers_clock(local, tree, monkeypatch):
    """server.Date (each apt.update with cache_time asks it): no command of its own, the
    prefetch read it. A later ask is that reading plus the time passed, and it drops
    nothing from the cache."""
    from datetime import timedelta

    from pyinfra.facts.server import Date

    state, host = local
    facts = [(File, {"path": str(tree / "app.py")})]
    cache = learn_and_prefetch(state, host, facts)
    commands = []
    original = prefetch._ORIGINAL["run_shell_command"]
    monkeypatch.setitem(prefetch._ORIGINAL, "run_shell_command",
                        lambda *a, **k: commands.append(a[1]) or original(*a, **k))
    now = [1000.0]
    monkeypatch.setattr(prefetch.time, "monotonic", lambda: now[0])
    seeded, _ = cache.clock
    assert abs((datetime.now(timezone.utc) - seeded).total_seconds()) < 60  # the host's clock (this machine's)
    cache.clock = (seeded, now[0])
    first = host.get_fact(Date)
    assert first == seeded
    now[0] += 125.7
    later = host.get_fact(Date)
    assert not commands and later - first == timedelta(seconds=125) and cache.clock_hits == 2
    host.get_fact(File, path=str(tree / "app.py"))
    assert cache.hits == 1 and not commands  # the seed survived the clock reads
    cache.clock = None  # a prefetch that could not read it: one command, then advanced
    host.get_fact(Date)
    host.get_fact(Date)
    assert len(commands) == 1
    monkeypatch.setenv("INFRA_FACT_CACHE", "verify")
    host.get_fact(Date)
    assert len(commands) == 2  # verify mode: the host's own clock


def counted_commands(monkeypatch) -> list:
    commands = []
    original = prefetch._ORIGINAL["run_shell_command"]
    monkeypatch.setitem(prefetch._ORIGINAL, "run_shell_command",
                        lambda *a, **k: commands.append(prefetch.command_text(a[1])) or original(*a, **k))
    return commands


def test_a_poll_reads_what_it_asked_last_run_in_one_command_and_again_each_time(local, tree, monkeypatch):
    """A health gate's poll: the facts its operation's poll asked for in the last run are
    read by one command when the poll starts (not one per fact; the first poll of a run
    that changed nothing by the prefetch's command), each answered once and equal to the
    host's own answer; the next poll reads again, so it sees the host move."""
    state, host = local
    monkeypatch.setattr(prefetch, "poll_key", lambda target: "Wait until healthy")
    target = tree / "appears"
    facts = [(File, {"path": str(target)}), (Sha1File, {"path": str(tree / "app.py")}), (Users, {})]
    prefetch.prefetch_host(state, host, "unit")
    with prefetch.live():
        first = [host.get_fact(cls, **kwargs) for cls, kwargs in facts]  # one by one, learned
    prefetch.save(host, state)
    prefetch.forget(host)
    cache = prefetch.prefetch_host(state, host, "unit")
    assert [len(v) for v in cache.known_polls.values()] == [len(facts)] and cache.known == []
    commands = counted_commands(monkeypatch)
    with prefetch.live():  # the first poll of a run that changed nothing: the prefetch's own reading
        assert [host.get_fact(cls, **kwargs) for cls, kwargs in facts] == first
    assert commands == [] and cache.polled_early == 1 and cache.poll_hits == len(facts)
    with prefetch.live():  # the next one reads the host, now
        assert [host.get_fact(cls, **kwargs) for cls, kwargs in facts] == first
    assert len(commands) == 1 and "poll" in commands[0] and cache.poll_hits == 2 * len(facts)
    target.write_text("up\n")  # the host moves by itself between two polls
    with prefetch.live():
        assert host.get_fact(File, path=str(target))["size"] == 3
        assert host.get_fact(File, path=str(target))["size"] == 3  # asked twice: the second from the host
    assert len(commands) == 3
    assert cache.changed_list() is None  # the same poll asked the same: nothing to save
    assert host.get_fact(File, path=str(target))["size"] == 3 and len(commands) == 4  # not in a poll: no reading
    monkeypatch.setenv("INFRA_FACT_CACHE", "verify")
    with prefetch.live():
        [host.get_fact(cls, **kwargs) for cls, kwargs in facts]
    assert len(commands) == 4 + len(facts)  # verify mode: one by one


def test_a_poll_outside_an_operation_or_with_secrets_reads_one_by_one(local, monkeypatch):
    state, host = local
    cache = prefetch.prefetch_host(state, host, "unit")
    with prefetch.live():  # no operation polling: nothing to key a reading on
        host.get_fact(Users)
    assert cache.polls_asked == {}
    monkeypatch.setattr(prefetch, "poll_key", lambda target: "Gate")
    with prefetch.live():
        host.get_fact(Secretive, token=HiddenValue("s3cret"))
        host.get_fact(Fails, _ignore_errors=True)
    assert not any("s3cret" in c for c in cache.polls_asked["Gate"]) and len(cache.polls_asked["Gate"]) == 1
    cache.known_polls = {"Gate": list(cache.polls_asked["Gate"])}
    commands = counted_commands(monkeypatch)
    with prefetch.live():
        assert host.get_fact(Fails, _ignore_errors=True) is None  # a failed reading is asked again
    assert len(commands) == 2 and cache.poll_hits == 0


def test_unchanged_until_a_command_upload_or_callback_runs(local, tree):
    """What the Docker version gate trusts: no command ran since this run's prefetch."""
    state, host = local
    assert not prefetch.unchanged()  # no prefetch: nothing to trust
    prefetch.prefetch_host(state, host, "unit")
    host.get_fact(File, path=str(tree / "app.py"))  # reading facts changes nothing
    with prefetch.live():
        host.get_fact(File, path=str(tree / "app.py"))
    assert prefetch.unchanged()
    StringCommand("true").execute(state, host, {})
    assert not prefetch.unchanged()
