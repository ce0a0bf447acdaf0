"""Remote commands of a no-op's health gates (issue 16): deterministic, so counted here.

The transport is a stand-in for the host: it answers each fact command from output captured
on a disposable ingestor host (the stand-in stack of tests/apps/ingestor, `ss -H -tulnp` as
root and the HttpHealth command per URL and JSON field, tests/unit/fixtures/facts/), and the
prefetch's host script commands (run, poll, save) as facts/prefetch_host.py would. pyinfra's
own fact code and facts/prefetch.py run unchanged above it.
"""

from __future__ import annotations

import json
import runpy
import shlex
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.connectors.util import CommandOutput, OutputLine
from pyinfra.context import ctx_host, ctx_state

from deploys import ingestor
from deploys.operations import poll
from facts import prefetch

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests/unit/fixtures/facts"
GATE = "Health JSON of every managed service as the plan expects; published ports on 127.0.0.1 only"


class Data(dict):
    __getattr__ = dict.get


def ingestor_data() -> Data:
    values = {k: v for k, v in runpy.run_path(str(REPO / "group_data/ingestor.py")).items() if not k.startswith("__")}
    return Data(values)


class CapturedHost:
    """Fact commands answered from captured output; the prefetch's host script emulated."""

    def __init__(self):
        self.health = {(item["url"], item["json_field"]): item["stdout"]
                       for item in json.loads((FIXTURES / "http_health_ingestor_standins.json").read_text())}
        self.ss = (FIXTURES / "ss_tulnp_ingestor_standins_debian12.txt").read_text()
        self.record: dict = {"facts": [], "polls": {}}
        self.commands: list[str] = []

    def answer(self, text: str) -> tuple[int, str]:
        if "ss -H -tulnp" in text:
            return 0, self.ss
        if "def probe(" in text and "threading" in text:  # HttpHealthMany: its probes as JSON
            rows = json.loads(shlex.split(text[text.rindex(" '[["):])[0])
            return 0, json.dumps([json.loads(self.health[(url, field or None)]) for url, field, *_ in rows]) + "\n"
        raise AssertionError(f"no captured output for {text[:120]!r}")

    def __call__(self, target, command, *args, **kwargs):
        text = prefetch.command_text(command)
        self.commands.append(text)
        if "Host side of the fact prefetch" in text:
            action = shlex.split(text.split("python3 -c", 1)[1])[1:]
            reply: object
            if action[0] == "run":
                polled = dict.fromkeys(c for commands in self.record["polls"].values() for c in commands)
                reply = {"facts": [], "polls": self.record["polls"], "clock": None,
                         "polled": [[c, *self.answer(c)] for c in polled]}
            elif action[0] == "poll":
                reply = [[c, *self.answer(c)] for c in self.record["polls"].get(action[2], [])]
            else:
                self.record = json.loads(kwargs["_stdin"])
                reply = {"ok": True}
            return True, CommandOutput([OutputLine("stdout", json.dumps(reply))])
        status, out = self.answer(text)
        return status == 0, CommandOutput([OutputLine("stdout", line) for line in prefetch.output_lines(out)])


@pytest.fixture
def captured(monkeypatch):
    monkeypatch.delenv("INFRA_FACT_CACHE", raising=False)
    inventory = Inventory((["@local"], {}))
    state = State(inventory=inventory, config=Config())
    connect_all(state)
    target = inventory.get_host("@local")
    assert prefetch.install()
    fake = CapturedHost()
    monkeypatch.setitem(prefetch._ORIGINAL, "run_shell_command", fake)
    monkeypatch.setattr(prefetch, "poll_key", lambda _: GATE)  # the gate's operation, as pyinfra names it
    with ctx_state.use(state), ctx_host.use(target):
        yield state, target, fake
    prefetch.forget(target)


def ingestor_gate_check(data: Data):
    plan = ingestor.release_plan(data, {}, None, {})
    services = [s for s, spec in plan["services"].items() if spec["health_url"]]
    ports = sorted(spec["port"] for spec in data.ingestor_services.values() if spec.get("port"))
    return ingestor.stack_check(plan, services, ports)


def a_run(state, target, fake, check) -> tuple[bool, str, int]:
    """One apply's gate: prefetch, the gate's poll, the save at the end; its commands."""
    prefetch.forget(target)
    prefetch.prefetch_host(state, target, "ingestor")
    before = len(fake.commands)
    ok, observed = poll(check, timeout_s=0, interval_s=0)
    polled = len(fake.commands) - before
    prefetch.save(target, state)
    return ok, observed, polled


def test_the_ingestor_gate_reads_every_health_url_and_the_sockets_in_one_command(captured):
    state, target, fake = captured
    data = ingestor_data()
    check = ingestor_gate_check(data)
    checks = sum(len(spec.get("health_expect") or {None: None}) for spec in data.ingestor_services.values()
                 if spec.get("health_path"))
    ok, observed, first = a_run(state, target, fake, check)  # the first run learns what the gate reads
    assert ok, observed
    assert checks == 11 and first == 2  # 11 health answers (8 URLs) in one python3, then ss
    ok, observed, steady = a_run(state, target, fake, check)
    assert ok, observed
    assert "8 services healthy" in observed and "ports on loopback only" in observed
    assert steady == 0  # a no-op's gate: answered by the reading the prefetch's command took
    assert len(fake.commands) == 2 + first + 1  # run, gate, save; run (a steady run saves nothing)


def test_a_gate_after_a_change_reads_the_host_in_one_command_each_poll(captured):
    """The prefetch's reading answers only a run that has changed nothing, once per gate."""
    state, target, fake = captured
    check = ingestor_gate_check(ingestor_data())
    a_run(state, target, fake, check)
    prefetch.forget(target)
    prefetch.prefetch_host(state, target, "ingestor")
    before = len(fake.commands)
    assert poll(check, timeout_s=0, interval_s=0)[0] and len(fake.commands) == before  # the early reading
    assert poll(check, timeout_s=0, interval_s=0)[0] and len(fake.commands) == before + 1  # read again: now
    prefetch.forget(target)
    cache = prefetch.prefetch_host(state, target, "ingestor")
    cache.invalidate()  # an operation's command ran
    before = len(fake.commands)
    assert poll(check, timeout_s=0, interval_s=0)[0] and len(fake.commands) == before + 1


def test_the_ingestor_gate_still_fails_on_a_bad_answer(captured):
    """Read in one command or not, the gate judges the same answers."""
    state, target, fake = captured
    check = ingestor_gate_check(ingestor_data())
    a_run(state, target, fake, check)
    bad = json.loads(fake.health[("http://127.0.0.1:8006/health", "dependencies.influxdb.status")])
    fake.health[("http://127.0.0.1:8006/health", "dependencies.influxdb.status")] = json.dumps({**bad, "field": "down"})
    fake.ss = fake.ss.replace("127.0.0.1:8086", "0.0.0.0:8086")
    ok, observed, steady = a_run(state, target, fake, check)
    assert not ok and steady == 0
    assert "data-api: dependencies.influxdb.status='down'" in observed and "not loopback-only: [8086]" in observed


class Noted:
    def __init__(self):
        self.noops: list[str] = []

    def noop(self, text):
        self.noops.append(text)


@pytest.mark.parametrize("unchanged, healthy, polled", [(True, True, False), (False, True, True), (True, False, True)])
def test_the_docker_version_gate_polls_only_when_the_host_changed_or_preflight_saw_no_engine(
        monkeypatch, unchanged, healthy, polled):
    """A no-op's Docker version gate costs no command: nothing ran since the prefetch, so
    preflight's reading (taken in this run) is the engine that runs."""
    from types import SimpleNamespace

    polls = []
    noted = Noted()
    monkeypatch.setattr(ingestor, "state", SimpleNamespace(is_executing=True))
    monkeypatch.setattr(ingestor, "host", noted)
    monkeypatch.setattr(ingestor.prefetch, "unchanged", lambda: unchanged)
    monkeypatch.setattr(ingestor, "wait_until", SimpleNamespace(_inner=lambda **kw: polls.append(kw) or iter(())))
    list(ingestor.docker_engine_gate._inner(check=lambda: (healthy, "Docker 24.0.7 (minimum 20.10)")))
    assert bool(polls) == polled and bool(noted.noops) == (not polled)
    if polls:
        assert polls[0]["timeout_s"] == 20
