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


class ImageHost:
    """Answers ContainerImage (the backend runs `running`) and Sha256File (the compose file
    on the host is `compose`); records noops and logs."""

    def __init__(self, running: str, compose: str):
        import hashlib
        self.running, self.compose_sha = running, hashlib.sha256(compose.encode()).hexdigest()
        self.data = type("Data", (), {"hivesync_dir": "/opt/hivesync", "hivesync_compose_file": "docker-compose.yml"})()
        self.noops, self.logs = [], []

    def get_fact(self, fact, **kwargs):
        from pyinfra.facts.files import Sha256File

        from facts.hivesync import ContainerImage
        if fact is Sha256File:
            return self.compose_sha
        assert fact is ContainerImage, fact
        wanted = "sha256:" + kwargs["image"].rsplit(":", 1)[-1]
        return {"running_id": "sha256:" + self.running.rsplit(":", 1)[-1], "running_name": self.running,
                "wanted_id": wanted}

    def noop(self, text):
        self.noops.append(text)

    def log(self, text, log_func=None):
        self.logs.append(text)


def test_the_backup_before_a_release_compares_the_image_this_run_deploys(monkeypatch):
    """A pinned rollback deploys an older image than the checkout's: the backup op must look
    at that one, or every rollback run re-makes a dump and a recreate."""
    from deploys.parts import hivesync_release
    fake = ImageHost(running="hivesync-backend:src-aaaaaaaaaaaa", compose="services: {}\n")
    monkeypatch.setattr(hivesync_release, "host", fake)
    monkeypatch.setattr(hivesync_release, "backup_command", lambda data, stamp, running: "pg_dump ...")

    def run(image):
        return list(hivesync_release.backup_before_release._inner(compose="services: {}\n", image=image,
                                                                  stamp="20261202T010203"))

    assert run("hivesync-backend:src-aaaaaaaaaaaa") == []
    assert fake.noops == ["backend already runs hivesync-backend:src-aaaaaaaaaaaa from this compose file"]
    assert run("hivesync-backend:src-bbbbbbbbbbbb") == ["pg_dump ..."]
    assert fake.logs == ["backend image changes (hivesync-backend:src-aaaaaaaaaaaa -> "
                         "hivesync-backend:src-bbbbbbbbbbbb): pg_dump first"]


def test_a_deploy_that_replaces_a_rolled_back_release_warns():
    from deploys.parts.hivesync_release import undone_rollback
    rolled = [{"action": "deploy", "id": "a"}, {"action": "rollback", "id": "b", "at": "2026-12-02T01:00:00Z"}]
    warning = undone_rollback(rolled, "bbbbbbbbbbbb", "cccccccccccc", "deploy")
    assert warning.startswith("release bbbbbbbbbbbb was put back by a rollback at 2026-12-02T01:00:00Z; "
                              "this deploy replaces it with cccccccccccc") and "hivesync_backend_ref" in warning
    assert undone_rollback(rolled, "bbbbbbbbbbbb", "bbbbbbbbbbbb", "deploy") is None  # stays
    assert undone_rollback(rolled, "bbbbbbbbbbbb", "cccccccccccc", "rollback") is None  # another rollback
    assert undone_rollback(rolled[:1], "aaaaaaaaaaaa", "cccccccccccc", "deploy") is None  # no rollback before
    assert undone_rollback([], None, "cccccccccccc", "deploy") is None
