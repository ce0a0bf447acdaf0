"""Health gates: wait (bounded) until a service answers as healthy, change nothing.

A gate that fails names the unit's state and its last journal lines (`unit=`), so the
operator sees the ImportError or the sandbox's `Errno 97`, not just "connection refused".
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.operations import files, systemd

from deploys.operations import fail_with, poll, poll_gate
from deploys.parts.tls import local_path
from facts.http import HttpHealth, describe, is_healthy
from facts.units import UnitDiagnostics, describe_unit


def unit_report(unit: str | None, lines: int = 12) -> str:
    """The unit's state and last journal lines, read from the host now ("" without a unit)."""
    if not unit:
        return ""
    name = unit if "." in unit else f"{unit}.service"
    return describe_unit(name, host.get_fact(UnitDiagnostics, unit=name, lines=lines))


@operation(is_idempotent=True)
def service_gate(check, description: str, unit: str | None = None, timeout_s: float = 60, interval_s: float = 2):
    """`wait_until` that, on failure, adds the unit's state and last journal lines."""
    if (message := poll_gate(check, description, timeout_s, interval_s)) is None:
        return
    if report := unit_report(unit):
        message += f"\n{report}"
    yield fail_with(message)


def unit_gate(check, description: str, unit: str, timeout_s: float, interval_s: float):
    """The same gate as a releases hook (`host_ -> (ok, message)`), run inside a switch:
    on failure the message carries the unit's state and last journal lines."""

    def gate(host_):
        ok, observed = poll(check, timeout_s, interval_s)
        if ok:
            return True, f"{description}: {observed}"
        message = f"{description}: not healthy after {timeout_s:g}s; last observed: {observed}"
        return False, "\n".join(x for x in (message, unit_report(unit)) if x)

    return gate


def external_https_check(url_path: str, server_name: str, address: str | None, ca_file: str | None,
                         auth: tuple[str, str] | None = None):
    """A `wait_until` check run on the controller: HTTPS through nginx, verified
    (`auth`: basic-auth user and password, for a vhost behind access control)."""
    import ssl

    import httpx

    def check():
        verify = ssl.create_default_context(cafile=local_path(ca_file)) if ca_file else True
        target = f"https://{address if address else server_name}{url_path}"
        if address and ":" in address:
            target = f"https://[{address}]{url_path}"
        try:
            with httpx.Client(verify=verify, timeout=10) as client:
                response = client.request(
                    "GET", target, headers={"Host": server_name}, extensions={"sni_hostname": server_name},
                    auth=auth,
                )
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return response.status_code < 400, f"HTTP {response.status_code} from https://{server_name}{url_path}"

    return check


def http_check(url: str, json_field: str | None = None, expect=None, ca_file: str | None = None):
    """A check for `wait_until`: GET `url` from the host, ok when 2xx (and field == expect)."""

    def check():
        result = host.get_fact(HttpHealth, url=url, json_field=json_field, ca_file=ca_file)
        return is_healthy(result, json_field, expect), describe(result)

    return check


@deploy("Health gate")
def http_gate(
    url: str,
    json_field: str | None = None,
    expect=None,
    timeout_s: float | None = None,
    ca_file: str | None = None,
    unit: str | None = None,
):
    """Fail the deploy with the last observed status (and `unit`'s state and journal)
    unless `url` turns healthy in time."""
    service_gate(
        name=f"Wait until {url} is healthy",
        check=http_check(url, json_field, expect, ca_file),
        description=f"{url}",
        unit=unit,
        timeout_s=timeout_s or host.data.get("health_timeout_s", 60),
        interval_s=host.data.get("health_interval_s", 2),
    )


@deploy("Health-check timer")
def health_check_timer(unit: str, rendered: dict[str, StringIO], script_mode: str = "755"):
    """A health-check script on a systemd timer (results in the journal).

    `rendered`: destination -> content, the script first, then `<unit>.service` and
    `<unit>.timer`. systemd reloads only when a unit file changed.
    """
    changed = []
    for dest, src in rendered.items():
        mode = script_mode if "/bin/" in dest else "644"
        changed.append(files.put(name=dest, src=src, dest=dest, user="root", group="root", mode=mode))
    systemd.daemon_reload(
        name="Reload systemd (health check)", _if=lambda: any(op.did_change() for op in changed[1:])
    )
    systemd.service(name=f"{unit}.timer enabled and active", service=f"{unit}.timer", running=True, enabled=True)
