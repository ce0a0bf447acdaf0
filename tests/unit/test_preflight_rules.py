from deploys.parts.preflight import capacity_problems, os_problem, port_problems, python_problem
from facts.system import parse_python_version

SUPPORTED = {"ubuntu": ["22.04", "24.04"], "debian": ["12"]}


def distro(os_id, version):
    return {"name": os_id.title(), "release_meta": {"ID": os_id, "VERSION_ID": version}}


def test_supported_os_passes():
    assert os_problem(distro("ubuntu", "24.04"), SUPPORTED) is None
    assert os_problem(distro("debian", "12"), SUPPORTED) is None


def test_unsupported_version_and_os_are_named():
    assert "ubuntu 20.04 is not supported" in os_problem(distro("ubuntu", "20.04"), SUPPORTED)
    assert "centos 9" in os_problem(distro("centos", "9"), SUPPORTED)


def test_capacity_thresholds():
    assert capacity_problems({"/": 5000}, 2000, 1024, 256) == []
    problems = capacity_problems({"/": 100}, 100, 1024, 256)
    assert problems == ["only 100 MiB free on / (need 1024 MiB)", "only 100 MiB memory available (need 256 MiB)"]
    problems = capacity_problems({"/": 100, "/opt": 9, "/var/lib": 100}, 2000, 1024, 256)
    assert problems == ["only 100 MiB free on /, /var/lib (need 1024 MiB)", "only 9 MiB free on /opt (need 1024 MiB)"]


def test_ports_free_or_held_by_their_own_service_pass():
    assert port_problems({8080: "hello.service"}, {}) == []
    assert port_problems({8080: "hello.service"}, {8080: ["hello.service"]}) == []


def test_port_taken_by_another_program_is_named():
    [problem] = port_problems({8080: "hello.service"}, {8080: ["nginx.service"]})
    assert "port 8080 is already in use by nginx.service" in problem


def test_python_version_rules():
    assert parse_python_version(["Python 3.11.2"]) == "3.11.2"
    assert parse_python_version(["sh: 1: python3: not found"]) is None
    assert python_problem("3.12.3", "3.10") is None
    assert python_problem("3.10.12", "3.11") == "python3 3.10.12 is older than 3.11"
    assert python_problem(None, "3.10") == "python3 is not installed"
    assert python_problem(None, None) is None
