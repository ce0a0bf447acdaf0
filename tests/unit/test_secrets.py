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
