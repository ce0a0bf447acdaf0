"""facts.http.HttpHealthMany: several probes in one command, run for real against the
throwaway servers of test_facts_http.py; each answer equals HttpHealth's own."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.http import HttpHealthMany
from tests.unit.test_facts_http import Handler, http_base, run_fact  # noqa: F401  (fixture)


def run_many(probes: list[dict]) -> list[dict] | None:
    command = HttpHealthMany().command(probes=probes).get_raw_value()
    result = subprocess.run([shutil.which("sh"), "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return HttpHealthMany().process(result.stdout.splitlines())


def test_many_probes_answer_as_one_probe_each_in_order(http_base):  # noqa: F811
    probes = [
        {"url": f"{http_base}/health", "json_field": "status"},
        {"url": f"{http_base}/health", "json_field": "db.ok"},
        {"url": f"{http_base}/down"},
        {"url": f"{http_base}/redirect"},
        {"url": f"{http_base}/health", "json_field": "checks.0.status", "timeout": 2},
        {"url": "http://127.0.0.1:9/health"},  # refused
        {"url": "ftp://x/"},
    ]
    many = run_many(probes)
    one_by_one = [run_fact(**{"json_field": None, **p}) for p in probes]
    assert many == one_by_one
    assert [m["field"] for m in many[:2]] == ["ok", True] and many[2]["status"] == 503
    assert many[5]["error"].startswith("ConnectionRefusedError") and many[6]["error"].startswith("ValueError")


def test_one_interpreter_and_hostile_values_stay_data(http_base, tmp_path):  # noqa: F811
    marker = tmp_path / "pwned"
    touch = f"touch${{IFS}}{marker}"  # as test_facts_http.py: no spaces, ${IFS} if a shell evaluated it
    url = f"{http_base}/health?a=it's&c=$({touch})&d=`{touch}`;{touch}"
    probes = [{"url": url, "json_field": "status", "host_header": "it's.example.com"}]
    assert HttpHealthMany().command(probes=probes).get_raw_value().count("python3 -c") == 1
    (result,) = run_many(probes)
    assert result["field"] == "ok" and result["url"] == url and not marker.exists()
    assert Handler.seen[-1][1] == "it's.example.com"
    assert run_many([]) == []


def test_process():
    assert HttpHealthMany().process([]) is None
    assert HttpHealthMany().process(["noise", '[{"url": "u"}]']) == [{"url": "u"}]
    with pytest.raises(FactProcessError):
        HttpHealthMany().process(["not json"])
    assert HttpHealthMany().requires_command(probes=[]) == "python3" and HttpHealthMany.default() is None
