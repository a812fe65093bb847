"""``GpuShareParameters``: the opaque device configuration a ResourceClaim (or its DeviceClass) passes to the
kube-vgpu DRA driver. Versioned and strict: an unknown version, kind or field is an error, never ignored.

In a claim (``spec.devices.config[].opaque``, which the scheduler copies to the allocation's ``config``)::

    opaque:
      driver: kube-vgpu.nvidia.com
      parameters:
        apiVersion: nvidia.com/v1alpha1      # <resource domain>/v1alpha1
        kind: GpuShareParameters
        coreLimit: 60                        # optional: soft (elastic) compute limit in percent, 1..100

``coreLimit`` is what the ``vcuda-core-limit`` annotation is for device-plugin pods: the share may use idle
compute up to this percent; below the share's ``cores`` it means the share itself (a hard limit). Standard
library only.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from plugin.core.errors import PluginError
from vcuda.units import CORE_PER_GPU

__all__ = [
    "NO_PARAMETERS",
    "PARAMETERS_KIND",
    "PARAMETERS_VERSION",
    "GpuShareParameters",
    "ParametersError",
    "parse_parameters",
]

PARAMETERS_KIND: Final = "GpuShareParameters"
PARAMETERS_VERSION: Final = "v1alpha1"
_FIELDS: Final = frozenset({"apiVersion", "kind", "coreLimit"})


class ParametersError(PluginError):
    """Opaque parameters that are not a valid ``GpuShareParameters`` object."""


@dataclass(frozen=True, slots=True)
class GpuShareParameters:
    """What a claim may ask beyond its capacity; ``None`` = not given (the share's own cores apply)."""

    core_limit: int | None = None


NO_PARAMETERS: Final = GpuShareParameters()


def parse_parameters(raw: object, domain: str) -> GpuShareParameters:
    """Validate one ``parameters`` object; raises :class:`ParametersError` with what is wrong."""
    if not isinstance(raw, Mapping):
        raise ParametersError(f"parameters must be an object, not {type(raw).__name__}")
    version = f"{domain}/{PARAMETERS_VERSION}"
    if raw.get("apiVersion") != version or raw.get("kind") != PARAMETERS_KIND:
        raise ParametersError(
            f"parameters must have apiVersion {version} and kind {PARAMETERS_KIND}, "
            f"not {_short(raw.get('apiVersion'))} {_short(raw.get('kind'))}"
        )
    unknown = sorted(str(k) for k in raw if k not in _FIELDS)
    if unknown:
        raise ParametersError(f"unknown field {_short(unknown[0])} in {PARAMETERS_KIND}")
    limit = raw.get("coreLimit")
    if limit is not None and (type(limit) is not int or not 1 <= limit <= CORE_PER_GPU):
        raise ParametersError(f"coreLimit must be a whole percent 1..{CORE_PER_GPU}, not {_short(limit)}")
    return GpuShareParameters(core_limit=limit)


def _short(value: object) -> str:
    """A hostile value, quoted and cut short for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
