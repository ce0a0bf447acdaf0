"""Hello: the smallest complete system (hardened service + preflight + health gate).

It is the test suite's and `make demo`'s system, and the template for a sixth one:
copy deploys/hello.py and this file, rename the group.

Each name below is a knob (deploys/settings.py): its type is its annotation or its value's
type, its documentation the comment above it. `make knobs GROUP=hello` lists them.
"""

from deploys.settings import Port

# Secrets the deploy needs (from .env or the environment); checked before connecting.
required_secrets = ["HELLO_SECRET"]

# Local directory with the application code (the user's app; here a sample).
hello_app_src = "tests/apps/hello"
# Where the code goes on the host (root-owned, read-only to the service).
hello_app_dir = "/opt/hello/app"
# Writable state of the service.
hello_data_dir = "/var/lib/hello"
# Service account and unit name.
hello_user = "hello"
hello_service = "hello"
# Address and port the app binds to. Keep 127.0.0.1 behind a reverse proxy.
hello_bind = "127.0.0.1"
hello_port: Port = 8080
# Interpreter and entry point.
hello_exec_start = "/usr/bin/python3 /opt/hello/app/app.py"
# Health endpoint and the JSON field/value that means healthy.
hello_health_path = "/health"
hello_health_field = "status"
hello_health_expect = "healthy"
# Public DNS names that must point at the host (none for this internal service).
hello_dns_names = []
