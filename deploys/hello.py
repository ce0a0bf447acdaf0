"""Hello: a hardened stdlib web service, end to end.

    pyinfra inventory.py deploys/hello.py

Preflight (OS, disk, memory, port, secrets) -> code -> hardened unit with the secret in
a 0600 EnvironmentFile -> restart only if code/unit/env changed -> health gate.
"""

from pathlib import Path

from pyinfra import host
from pyinfra.operations import files

from deploys import secrets
from deploys.parts import deploy_lock
from deploys.parts.health import http_gate
from deploys.parts.preflight import preflight
from deploys.parts.service import ServiceSpec, hardened_service, service_defaults

REPO = Path(__file__).resolve().parent.parent


def main(data):
    unit = f"{data.hello_service}.service"
    preflight(
        names=data.hello_dns_names,
        ports={data.hello_port: unit},
        secrets=data.required_secrets,
        disk_paths=("/", data.hello_app_dir, data.hello_data_dir),  # each may be its own volume
    )
    code = files.sync(
        name="Application code",
        src=str(REPO / data.hello_app_src),
        dest=data.hello_app_dir,
        user="root",
        group="root",
        mode="644",
        dir_mode="755",
        delete=True,
        exclude=["*.pyc"],
        exclude_dir=["__pycache__"],
    )
    spec = ServiceSpec.from_data(
        {
            "name": data.hello_service,
            "description": "Hello sample web service",
            "exec_start": data.hello_exec_start,
            "user": data.hello_user,
            "working_dir": data.hello_app_dir,
            "state_dirs": [data.hello_data_dir],
            "env": {
                "BIND": data.hello_bind,
                "PORT": str(data.hello_port),
                "DATA_DIR": data.hello_data_dir,
                "SECRET_NAME": "HELLO_SECRET",
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
        },
        secrets=secrets.get(data.required_secrets),
        defaults=service_defaults(),
    )
    hardened_service(spec, restart_when=(code,), restart_paths=(data.hello_app_dir,))
    http_gate(
        f"http://127.0.0.1:{data.hello_port}{data.hello_health_path}",
        json_field=data.hello_health_field,
        expect=data.hello_health_expect,
        unit=spec.name,
    )


if "hello" in host.groups:
    deploy_lock.guarded("hello", main, host.data)  # one run at a time on this host, and its record
