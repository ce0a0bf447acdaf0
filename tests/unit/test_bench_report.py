"""`make bench`'s host CPU reading and its report (tools/bench.py): no timing here, only the
arithmetic and parsing on made-up numbers."""

from pathlib import Path

from tools import bench
from tools.bench_cases.measure import container_cpu_s, hosts_cpu_s

CID = "ab" * 32


def test_cgroup_v1_cpuacct_usage_is_nanoseconds(tmp_path: Path):
    usage = tmp_path / "cpuacct/docker" / CID / "cpuacct.usage"
    usage.parent.mkdir(parents=True)
    usage.write_text("2500000000\n")
    assert container_cpu_s(CID, tmp_path) == 2.5


def test_cgroup_v2_cpu_stat_usage_usec(tmp_path: Path):
    stat = tmp_path / f"system.slice/docker-{CID}.scope/cpu.stat"
    stat.parent.mkdir(parents=True)
    stat.write_text("usage_usec 1250000\nuser_usec 1000000\nsystem_usec 250000\n")
    assert container_cpu_s(CID, tmp_path) == 1.25


def test_an_unreadable_cgroup_gives_no_reading(tmp_path: Path):
    assert container_cpu_s(CID, tmp_path) is None
    assert hosts_cpu_s([]) is None


def test_cpu_floor_is_all_cpu_over_the_cores():
    assert bench.cpu_floor_s({"noop_cpu_s": 1.0, "hosts_cpu_s": 3.0, "cores": 2}) == 2.0
    assert bench.cpu_floor_s({"noop_cpu_s": 1.0, "hosts_cpu_s": None, "cores": 2}) is None


def fan_result(wall: float, hosts_cpu: float | None) -> dict:
    return {"noop_s": wall, "noop_min_s": wall, "noop_max_s": wall, "noop_cpu_s": 1.0, "hosts_cpu_s": hosts_cpu,
            "cores": 2, "commands": 2, "peak_mb": 77}


def test_the_fanout_table_shows_the_hosts_cpu_and_the_floor():
    fan = {"1": fan_result(1.0, 0.3), "5": fan_result(1.7, 1.5), "10": fan_result(2.5, 3.0)}
    text = bench.markdown([], fan, 0.1, "0.1 0.1 0.1", ["fanout: x"])
    assert "| 10 | 2.50 (2.50-2.50) | 1.00 | 3.00 | 2.00 | 2 | 77 |" in text
    assert "10 hosts / 1 host: 2.50x" in text
    assert "| 1 | 1.00 (1.00-1.00) | 1.00 | 0.30 | 0.65 |" in text
    assert "Missed:\n- fanout: x" in text


def test_a_machine_without_cgroup_readings_shows_dashes():
    fan = {"1": fan_result(1.0, None), "10": fan_result(2.0, None)}
    assert "| 10 | 2.00 (2.00-2.00) | 1.00 | - | - | 2 | 77 |" in bench.markdown([], fan, 0.1, "0", [])
