"""The plugin's errors. Standard library only."""

import reprlib
from typing import Final

__all__ = [
    "MISMATCH_PREFIX",
    "AllocationError",
    "AttributionMismatchError",
    "ConfigError",
    "MigLayoutChangedError",
    "PluginError",
    "shown",
]

MISMATCH_PREFIX: Final = "kube-vgpu attribution mismatch:"

_SHORT: Final = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 60, 60


def shown(value: object) -> str:
    """``repr`` of a value read from a file, bounded for an error message: YAML aliases nest a list nine
    deep with nine items each ("billion laughs") at no cost to load, and forever to ``repr``."""
    return _SHORT.repr(value)


class PluginError(Exception):
    """Base of every error the plugin raises on purpose."""


class AllocationError(PluginError):
    """An ``Allocate`` call cannot be served without risking wrong limits (the kubelet fails admission)."""


class AttributionMismatchError(PluginError):
    """``PreStartContainer`` found that the container holding the devices is not the one configured.

    ``str(err)`` always starts with :data:`MISMATCH_PREFIX`, so logs and events can be grepped for it.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(f"{MISMATCH_PREFIX} {detail}")


class ConfigError(PluginError):
    """A setting is invalid; the message names the field."""


class MigLayoutChangedError(PluginError):
    """The GPUs' MIG modes or instances changed since start-up: what the plugin serves must be rebuilt."""
