"""Health gates: wait (bounded) until a service answers as healthy, change nothing."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from deploys.operations import wait_until
from deploys.parts.tls import local_path
from facts.http import HttpHealth, describe, is_healthy


def external_https_check(url_path: str, server_name: str, address: str | None, ca_file: str | None):
    """A `wait_until` check run on the controller: HTTPS through nginx, verified."""
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
                    "GET", target, headers={"Host": server_name}, extensions={"sni_hostname": server_name}
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
):
    """Fail the deploy with the last observed status unless `url` turns healthy in time."""
    wait_until(
        name=f"Wait until {url} is healthy",
        check=http_check(url, json_field, expect, ca_file),
        description=f"{url}",
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
