"""The parts deploys/hivesync.py is composed of: the status wording of the local roles, the
plan-tables warning a passing gate shows, and the parameters the wrangler operations take
(no hivesync knob read inside them, so a second deploy can use them)."""

import inspect
import logging

from deploys.parts import hivesync_stack, local_machine, wrangler


def test_a_stopped_service_shows_its_exit_not_its_last_health():
    assert local_machine.service_state({"state": "running", "health": "healthy"}) == "running (healthy)"
    assert local_machine.service_state({"state": "running", "health": None}) == "running"
    # docker keeps "unhealthy" on a container it stopped: not shown
    assert local_machine.service_state({"state": "exited", "health": "unhealthy", "exit_code": 0}) == "exited (code 0)"
    assert local_machine.service_state({"state": "exited", "health": "unhealthy", "exit_code": None}) == "exited"
    assert local_machine.service_state({"state": "dead", "health": "unhealthy"}) == "dead"
    assert local_machine.service_state({"state": "created", "health": "starting"}) == "created"
    assert local_machine.service_state({}) == "not created"
    # a process still there: its health means something
    assert local_machine.service_state({"state": "restarting", "health": "unhealthy"}) == "restarting (unhealthy)"
    assert local_machine.service_state({"state": "paused", "health": "healthy"}) == "paused (healthy)"


def test_a_passing_gate_shows_the_missing_plan_tables_as_a_warning(monkeypatch, caplog):
    logged = []

    class Host:
        def log(self, text, log_func=None):
            logged.append((text, log_func))

    monkeypatch.setattr(hivesync_stack, "host", Host())
    text = "3 services healthy; warning: tables of the plan missing: attachments (create_all; 6 tables)"
    assert hivesync_stack.warned(text) == text
    [(message, func)] = logged
    assert message == "warning: tables of the plan missing: attachments (create_all; 6 tables)"
    assert func == logging.getLogger("pyinfra").warning
    logged.clear()
    assert hivesync_stack.warned("3 services healthy; the plan's 11 tables present") and logged == []


def test_wrangler_operations_take_their_tools_as_arguments():
    for op in (wrangler.wrangler_deploy, wrangler.wrangler_secret, wrangler.r2_bucket, wrangler.r2_placeholders):
        assert "wrangler" in inspect.signature(op._inner).parameters, op
    assert "hivesync_" not in inspect.getsource(wrangler)
    assert "hivesync_" not in inspect.getsource(local_machine)


class FakeHost:
    """Answers ComposeServices and File; records noops."""

    def __init__(self, running: dict, deployed: bool = True):
        self.running, self.deployed, self.noops = running, deployed, []
        self.data = {"docker_compose_cli": "docker compose"}

    def get_fact(self, fact, **kwargs):
        from facts.compose import ComposeServices
        return self.running if fact is ComposeServices else ({"mode": 644} if self.deployed else None)

    def noop(self, text):
        self.noops.append(text)


def compose_commands(monkeypatch, action, running, deployed=True):
    from deploys.parts import compose
    fake = FakeHost(running, deployed)
    monkeypatch.setattr(local_machine, "host", fake)
    monkeypatch.setattr(compose, "host", fake)
    commands = [c.get_raw_value() for c in local_machine.local_compose._inner(
        action=action, project="hivesync", directory="/home/dev/hs", compose_file="docker-compose.yml",
        env_file=".env.production", services=("backend", "postgres", "redis"), app="HiveSync",
        deploy_hint="make hivesync-local-up first")]
    return commands, fake.noops


def test_local_stop_and_start_change_nothing_when_already_so(monkeypatch):
    up = {s: {"state": "running", "health": "healthy"} for s in ("backend", "postgres", "redis")}
    down = {s: {"state": "exited", "health": "unhealthy"} for s in ("backend", "postgres", "redis")}
    assert compose_commands(monkeypatch, "stop", down) == ([], ["compose project hivesync: stopped"])
    assert compose_commands(monkeypatch, "start", up) == ([], ["compose project hivesync: 3 services running"])
    [stop], _ = compose_commands(monkeypatch, "stop", {**down, "redis": up["redis"]})
    assert stop.endswith(" stop") and "-p hivesync" in stop
    [start], _ = compose_commands(monkeypatch, "start", {**up, "backend": down["backend"]})
    assert start.endswith("up -d")
    [refused], _ = compose_commands(monkeypatch, "start", {}, deployed=False)
    assert "HiveSync is not deployed on this machine yet (/home/dev/hs/docker-compose.yml is missing): " \
           "make hivesync-local-up first" in refused


def test_the_dev_venv_is_python_envs_script_with_its_options_and_the_digest_recorded_last(monkeypatch):
    from deploys import operations
    class Fake:
        def get_fact(self, *args, **kwargs):
            return None

    monkeypatch.setattr(operations, "host", Fake())
    [command] = list(local_machine.dev_venv._inner(venv="/h/dev/venv", python="python3",
                                                   venv_args=["--system-site-packages"],
                                                   requirements="/h/src/requirements.txt", digest="d" * 64,
                                                   pip_args=["--no-index"]))
    text = command.get_raw_value()
    assert "python3 -m venv --system-site-packages /h/dev/venv" in text
    assert "pip install -r /h/src/requirements.txt failed" in text and "the live release" not in text
    assert text.endswith(f"echo {'d' * 64} > /h/dev/venv/.requirements.sha256")
