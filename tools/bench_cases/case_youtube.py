"""youtube (production beside development on the operator's machine), as tests/e2e/test_youtube.py."""

from tests.e2e import test_youtube as e2e
from tests.e2e.test_youtube import yt  # noqa: F401  (fixture)
from tools.bench_cases.measure import measure, record


def test_youtube(yt):  # noqa: F811
    record("youtube", measure(e2e.DEPLOY, yt.name, e2e.ENV, {**e2e.DATA, "youtube_action": "deploy"}))
