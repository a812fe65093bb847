"""The plugin's errors. Standard library only."""

from typing import Final

from vcuda.errors import shown

__all__ = [
    "MISMATCH_PREFIX",
    "AllocationError",
    "AttributionMismatchError",
    "ConfigError",
    "MigLayoutChangedError",
    "PluginError",
    "InvalidDeviceIdsError",
    "shown",
]

MISMATCH_PREFIX: Final = "kube-vgpu attribution mismatch:"


class PluginError(Exception):
    """Base of every error the plugin raises on purpose."""


class AllocationError(PluginError):
    """An ``Allocate`` call cannot be served without risking wrong limits (the kubelet fails admission)."""


class InvalidDeviceIdsError(AllocationError):
    """An ``Allocate`` names device IDs the resource does not serve, or one twice: the request is wrong,
    not the node."""


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
