import pytest
from pyinfra.api import HiddenValue

from deploys import secrets
from deploys.errors import SecretsMissing


@pytest.mark.parametrize("value", ["", "REPLACE_ME", "replace_me", "<GENERATE_JWT_TOKEN>", "YOUR_SECRET_HERE", "  "])
def test_placeholders_count_as_missing(value):
    assert secrets.is_placeholder(value)


@pytest.mark.parametrize("value", ["s3cr3t", "replace", "0"])
def test_real_values_are_not_placeholders(value):
    assert not secrets.is_placeholder(value)


def test_one_message_names_every_missing_secret_of_every_system():
    with pytest.raises(SecretsMissing) as err:
        secrets.check_required({"music": ["A", "B"], "archon": ["C"]}, {"A": "ok", "B": "REPLACE_ME"})
    assert "music: B" in str(err.value) and "archon: C" in str(err.value)
    assert "ok" not in str(err.value)


def test_values_come_back_masked():
    got = secrets.get(["TOKEN"], {"TOKEN": "hunter2"})
    assert isinstance(got["TOKEN"], HiddenValue)
    assert str(got["TOKEN"]) != "hunter2" and got["TOKEN"].unmask() == "hunter2"


def test_environment_wins_over_dotenv(tmp_path):
    env = tmp_path / ".env"
    env.write_text("A=from-file\nB=file-only\n")
    values = secrets.load({"A": "from-env"}, env)
    assert values["A"] == "from-env" and values["B"] == "file-only"


def test_values_handed_out_are_masked_in_pyinfras_log(monkeypatch):
    """A failed command's stderr or a journal line quoted in a failed gate must not print a
    secret: pyinfra logs them through its logger, a child logger included."""
    import io
    import logging

    monkeypatch.setattr(secrets, "_KNOWN", set())
    logger = logging.getLogger("pyinfra-test-mask")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        secrets.mask_in_logs(logger)
        secrets.mask_in_logs(logger)  # idempotent: one filter each
        assert sum(isinstance(f, secrets._MaskSecrets) for f in handler.filters) == 1
        secrets.get(["API_TOKEN", "SHORT"], {"API_TOKEN": "tok-3f9a77c1", "SHORT": "abc"})
        logger.error("    [host] app started with token %s", "tok-3f9a77c1")
        logging.getLogger("pyinfra-test-mask.child").error("journal: Bearer tok-3f9a77c1 refused")
        logger.error("short values stay: abc")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "tok-3f9a77c1" not in out
    assert out.count("***") == 2 and "short values stay: abc" in out
