"""Errors that stop a run with one clear message (and no traceback).

pyinfra's CLI prints a `PyinfraError` raised from the inventory or a deploy file as
``--> pyinfra error: <message>`` and exits non-zero, before any change is made when it
is raised at load or prepare time. Every check in this repository raises one of these.
"""

from pyinfra.api.exceptions import PyinfraError


class ConfigError(PyinfraError):
    """The inventory, group data or environment is malformed."""


class SecretsMissing(ConfigError):
    """Required secrets are missing or still hold a placeholder."""


class PreflightFailed(PyinfraError):
    """A host is not fit for the deploy; nothing was changed."""
