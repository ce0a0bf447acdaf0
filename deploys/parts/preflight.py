"""Preflight: refuse to touch a host that is not fit for the deploy.

Every check runs at prepare time, before the first operation executes, and all
problems are reported together in one message: the OS and its version, free disk and
memory, ports that must be free (or already held by the service being deployed), DNS
names that must point at this host, and secrets that must be set.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import LinuxDistribution

from deploys import secrets as secret_store
from deploys.errors import PreflightFailed
from facts.dns import HostAddresses, ResolvedAddresses, dns_problem
from facts.system import FreeDiskMb, ListenerUnits, MemAvailableMb, PythonVersion


def os_problem(distro: dict | None, supported: dict[str, list[str]]) -> str | None:
    meta = (distro or {}).get("release_meta") or {}
    os_id = str(meta.get("ID", (distro or {}).get("name") or "unknown")).lower()
    version = str(meta.get("VERSION_ID", "")).strip('"')
    accepted = supported.get(os_id)
    if accepted is None:
        wanted = ", ".join(f"{k} {'/'.join(v)}" for k, v in supported.items())
        return f"OS {os_id} {version} is not supported (supported: {wanted})"
    if version not in accepted:
        return f"OS {os_id} {version} is not supported ({os_id} {'/'.join(accepted)} are)"
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def python_problem(found: str | None, minimum: str | None) -> str | None:
    """The host's python3 must exist and be at least `minimum` (venvs are built from it)."""
    if not minimum:
        return None
    if not found:
        return "python3 is not installed"
    if _version_tuple(found) < _version_tuple(str(minimum)):
        return f"python3 {found} is older than {minimum}"
    return None


def capacity_problems(free_disk: dict[str, int | None], mem_mb: int | None, min_disk: int, min_mem: int):
    """Paths with the same free space (most often one filesystem) share one message."""
    problems = []
    short: dict[int, list[str]] = {}
    for path, free in free_disk.items():
        if free is not None and free < min_disk:
            short.setdefault(free, []).append(path)
    for free, paths in short.items():
        problems.append(f"only {free} MiB free on {', '.join(paths)} (need {min_disk} MiB)")
    if mem_mb is not None and mem_mb < min_mem:
        problems.append(f"only {mem_mb} MiB memory available (need {min_mem} MiB)")
    return problems


def memory_problems(total_mb: int | None, available_mb: int | None, sized_mb: int, needed_mb: int) -> list[str]:
    """Total memory against the plan's sizing of the machine (a "2 GB" VM reports a bit
    less: the kernel keeps some), available memory against what the stack needs now."""
    problems = []
    if total_mb is not None and total_mb < sized_mb:
        problems.append(f"only {total_mb} MiB memory installed; the plan sizes this host at >= {sized_mb} MiB")
    if available_mb is not None and available_mb < needed_mb:
        problems.append(f"only {available_mb} MiB memory available; the stack needs about {needed_mb} MiB")
    return problems


def port_problems(ports: dict[int, str | None], listeners: dict[int, list[str]]) -> list[str]:
    """A port is fine when free, or held only by its declared owner unit."""
    problems = []
    for port, owner in sorted(ports.items()):
        holders = listeners.get(int(port), [])
        if holders and (owner is None or any(unit != owner for unit in holders)):
            who = ", ".join(holders)
            problems.append(f"port {port} is already in use by {who}" + (f" (expected {owner} or free)" if owner else ""))
    return problems


def collect_problems(
    names: Iterable[str] = (),
    ports: dict[int, str | None] | None = None,
    secrets: Iterable[str] = (),
    disk_paths: Iterable[str] = ("/",),
) -> list[str]:
    """Read the facts this host needs and return every problem found."""
    data = host.data
    problems = []
    if problem := os_problem(host.get_fact(LinuxDistribution), data.get("supported_os", {})):
        problems.append(problem)
    if problem := python_problem(host.get_fact(PythonVersion), data.get("preflight_python_min")):
        problems.append(problem)
    free = {path: host.get_fact(FreeDiskMb, path=path) for path in disk_paths}
    problems += capacity_problems(
        free,
        host.get_fact(MemAvailableMb),
        int(data.get("preflight_min_disk_mb", 1024)),
        int(data.get("preflight_min_memory_mb", 256)),
    )
    if ports:
        problems += port_problems(ports, host.get_fact(ListenerUnits))
    if names and data.get("preflight_check_dns", True):
        expected = list(data.get("expected_addresses") or [])
        here = host.get_fact(HostAddresses)
        for dns_name in names:
            resolved = host.get_fact(ResolvedAddresses, hostname=dns_name)
            if problem := dns_problem(dns_name, resolved, here, expected or None):
                problems.append(problem)
    if gone := secret_store.missing(list(secrets), secret_store.load()):
        problems.append(f"missing or placeholder secrets: {', '.join(gone)}")
    return problems


@deploy("Preflight checks")
def preflight(
    names: Iterable[str] = (),
    ports: dict[int, str | None] | None = None,
    secrets: Iterable[str] = (),
    disk_paths: Iterable[str] = ("/",),
):
    """Raise `PreflightFailed` (no change made) unless every check passes."""
    problems = collect_problems(names, ports, secrets, disk_paths)
    if problems:
        raise PreflightFailed(f"preflight failed on {host.name}: " + "; ".join(problems))
    host.noop("preflight checks passed")
