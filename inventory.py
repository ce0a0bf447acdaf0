"""Inventory of every environment: `DEPLOY_ENV=prod|staging|test` (default: test).

    pyinfra inventory.py deploys/music.py                 # disposable test hosts
    DEPLOY_ENV=prod pyinfra inventory.py deploys/music.py # production (or `make prod`)

Groups: by system (music, archon, ingestor, youtube, hivesync), by kind (native_vm,
docker_host, linode, local) and by environment (prod, staging, test). Knobs live in
group_data/<group>.py. When deploy files are named on the command line, only their
systems' hosts are loaded, and their secrets are checked before any connection.
"""

import sys as _sys
from pathlib import Path as _Path

# Importable from any working directory (pyinfra only adds the current one to sys.path).
_sys.path.insert(0, str(_Path(__file__).resolve().parent))

from deploys import pyinfra_speedups as _speedups
from deploys import environments as _environments
from deploys import secrets as _secrets
from deploys import settings as _settings

_speedups.install()  # before pyinfra reads group_data/ and the deploy file
_ENV = _environments.selected_env()
_HOSTS = _environments.hosts_for(_ENV)
_environments.validate(_HOSTS, require_system=_ENV != "test")
_SYSTEMS = _environments.requested_systems(_sys.argv)
_HOSTS = _environments.select(_HOSTS, _SYSTEMS)
# Every host-data and --data value against the knobs group_data/ declares (type, range,
# name, control characters): one message, before any connection.
_settings.check(_HOSTS, _sys.argv)
# Secrets are checked for the deploys being run, not for read-only commands such as
# `INFRA_SYSTEMS=music pyinfra inventory.py exec -- ...` (make music-status).
_DEPLOYING = _environments.requested_systems(_sys.argv, {})
_PRESENT = [s for s in _DEPLOYING if any(s in h.groups for h in _HOSTS)]
_secrets.check_required(_environments.required_secrets(_PRESENT))
_secrets.mask_in_logs()  # what hosts print back (stderr, journal lines) shows secrets as ***

globals().update(_environments.groups_in_precedence_order(_HOSTS, _ENV))
