"""Stand-in of services/data-api/src/models/ (bbc4ab4): Device and Entity."""
from .device import Device  # noqa: F401
from .entity import Entity  # noqa: F401
