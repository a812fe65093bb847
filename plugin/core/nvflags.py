"""NVIDIA's ``flags`` (the names of its command-line flags, in its config file) mapped to kube-vgpu settings.

Every flag NVIDIA's ``api/config/v1/flags.go`` knows is either mapped to the kube-vgpu setting with the same
meaning, accepted with its neutral value only (a feature kube-vgpu does not have, turned off), or ignored
because it configures another program (``gfd.*``, GPU feature discovery's own flags). Anything else is an
error naming the key. Pure.

| NVIDIA flag | kube-vgpu |
| --- | --- |
| ``migStrategy`` | ``migStrategy`` |
| ``failOnInitError`` | ``failOnInitError`` |
| ``nvidiaDriverRoot`` | ``nvidiaDriverHostRoot`` (the host's path, as NVIDIA means it) |
| ``plugin.containerDriverRoot`` | ``nvidiaDriverRoot`` (where the plugin sees it) |
| ``nvidiaDevRoot`` | must equal ``nvidiaDriverRoot`` (kube-vgpu reads devices there) |
| ``mpsRoot`` | ``mpsRoot`` |
| ``plugin.deviceListStrategy`` | ``deviceListStrategy`` (``cdi-annotations``, ``cdi-cri`` -> ``cdi``) |
| ``plugin.passDeviceSpecs`` | ``true`` -> ``deviceListStrategy: device-specs`` |
| ``plugin.deviceIDStrategy`` | ``deviceIdStrategy`` |
| ``plugin.sharedDevicesAllocationPolicy`` | how replicas are picked (``distributed``, ``packed``) |
| ``gdrcopyEnabled``, ``gdsEnabled``, ``mofedEnabled``, ``useNodeFeatureAPI`` | ``false`` only |
| ``deviceDiscoveryStrategy`` | ``auto`` or ``nvml`` only |
| ``plugin.cdiAnnotationPrefix``, ``plugin.nvidiaCTKPath`` | NVIDIA's defaults only |
| ``gfd.*`` | ignored (GPU feature discovery's flags) |
"""

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from plugin.core.errors import ConfigError, shown

__all__ = ["AllocationPolicy", "flag_settings"]


class AllocationPolicy(StrEnum):
    """``flags.plugin.sharedDevicesAllocationPolicy``: how replicas are picked across GPUs."""

    DISTRIBUTED = "distributed"
    PACKED = "packed"


_LIST_STRATEGIES: Final = {"envvar": "envvar", "cdi-annotations": "cdi", "cdi-cri": "cdi"}
_OFF_ONLY: Final = ("gdrcopyEnabled", "gdsEnabled", "mofedEnabled", "useNodeFeatureAPI")
_GFD_KEYS: Final = frozenset({"oneshot", "noTimestamp", "sleepInterval", "outputFile", "machineTypeFile"})
_PLUGIN_KEYS: Final = frozenset(
    {
        "passDeviceSpecs",
        "deviceListStrategy",
        "deviceIDStrategy",
        "cdiAnnotationPrefix",
        "nvidiaCTKPath",
        "containerDriverRoot",
        "sharedDevicesAllocationPolicy",
    }
)
_TOP_KEYS: Final = frozenset(
    {
        "migStrategy",
        "failOnInitError",
        "mpsRoot",
        "nvidiaDriverRoot",
        "nvidiaDevRoot",
        "deviceDiscoveryStrategy",
        "plugin",
        "gfd",
        *_OFF_ONLY,
    }
)
_DEFAULTS_ONLY: Final = {"cdiAnnotationPrefix": "cdi.k8s.io/", "nvidiaCTKPath": "/usr/bin/nvidia-ctk"}


def _fail(key: str, why: str) -> ConfigError:
    return ConfigError(f"flags.{key}: {why}")


def _unknown(doc: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
    extra = sorted(str(k) for k in doc if k not in known)
    if extra:
        raise _fail(prefix + extra[0], f"unknown flag (known: {', '.join(sorted(known))})")


def _typed(value: object, kind: type, key: str) -> Any:
    if not isinstance(value, kind) or (kind is str and not value):
        raise _fail(key, f"must be a {'boolean' if kind is bool else 'non-empty string'}, not {shown(value)}")
    return value


def _choice(value: object, choices: tuple[str, ...], key: str) -> str:
    text = _typed(value, str, key)
    if text not in choices:
        raise _fail(key, f"{text!r} is not one of {', '.join(choices)}")
    return str(text)


def _list_strategy(value: object) -> str:
    key = "plugin.deviceListStrategy"
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise _fail(key, "must be a strategy or a list of strategies")
    if "volume-mounts" in items:
        raise _fail(key, "'volume-mounts' is not supported by kube-vgpu (use envvar or cdi-cri)")
    unknown = [i for i in items if i not in _LIST_STRATEGIES]
    if unknown:
        raise _fail(key, f"{unknown[0]!r} is not one of envvar, volume-mounts, cdi-annotations, cdi-cri")
    ours = {_LIST_STRATEGIES[i] for i in items}
    if len(ours) > 1:
        raise _fail(key, f"{items}: kube-vgpu passes GPUs one way only; choose envvar or the cdi strategies")
    return ours.pop()


def _top(flags: Mapping[str, Any], out: dict[str, Any]) -> None:
    _roots(flags, out)
    for key in _OFF_ONLY:
        if _typed(flags.get(key, False), bool, key):
            raise _fail(key, "true is not supported by kube-vgpu (leave it false)")
    discovery = flags.get("deviceDiscoveryStrategy", "auto")
    _choice(discovery, ("auto", "nvml"), "deviceDiscoveryStrategy")
    if "migStrategy" in flags:
        out["mig_strategy"] = _choice(flags["migStrategy"], ("none", "single", "mixed"), "migStrategy")
    if "failOnInitError" in flags:
        out["fail_on_init_error"] = _typed(flags["failOnInitError"], bool, "failOnInitError")


def _roots(flags: Mapping[str, Any], out: dict[str, Any]) -> None:
    if "mpsRoot" in flags:
        out["mps_root"] = _typed(flags["mpsRoot"], str, "mpsRoot")
    if "nvidiaDriverRoot" in flags:
        out["nvidia_driver_host_root"] = _typed(flags["nvidiaDriverRoot"], str, "nvidiaDriverRoot")
    dev_root = flags.get("nvidiaDevRoot")
    if dev_root is not None and dev_root != flags.get("nvidiaDriverRoot", "/"):
        raise _fail("nvidiaDevRoot", "kube-vgpu reads device nodes under the driver root; set it equal")


def _plugin(doc: Mapping[str, Any], out: dict[str, Any]) -> AllocationPolicy:
    _unknown(doc, _PLUGIN_KEYS, "plugin.")
    if "deviceListStrategy" in doc:
        out["device_list_strategy"] = _list_strategy(doc["deviceListStrategy"])
    if _typed(doc.get("passDeviceSpecs", False), bool, "plugin.passDeviceSpecs"):
        if out.get("device_list_strategy", "envvar") != "envvar":
            raise _fail("plugin.passDeviceSpecs", "true goes with the envvar list strategy only")
        out["device_list_strategy"] = "device-specs"
    if "deviceIDStrategy" in doc:
        out["device_id_strategy"] = _choice(
            doc["deviceIDStrategy"], ("uuid", "index"), "plugin.deviceIDStrategy"
        )
    if "containerDriverRoot" in doc:
        out["nvidia_driver_root"] = _typed(doc["containerDriverRoot"], str, "plugin.containerDriverRoot")
    for key, default in _DEFAULTS_ONLY.items():
        if key in doc and doc[key] != default:
            raise _fail(f"plugin.{key}", f"only NVIDIA's default {default!r} is supported by kube-vgpu")
    policy = doc.get("sharedDevicesAllocationPolicy", AllocationPolicy.DISTRIBUTED.value)
    choices = tuple(p.value for p in AllocationPolicy)
    return AllocationPolicy(_choice(policy, choices, "plugin.sharedDevicesAllocationPolicy"))


def _given(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The flags set: NVIDIA's flags are pointers, so ``null`` is unset (its plugin logs the config it runs
    with, unset flags as ``null``, and operators copy that)."""
    return {k: v for k, v in doc.items() if v is not None}


def _section(flags: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = flags.get(key) or {}
    if not isinstance(value, Mapping):
        raise _fail(key, "must be a mapping")
    return _given(value)


def flag_settings(flags: Mapping[str, Any]) -> tuple[dict[str, Any], AllocationPolicy]:
    """(kube-vgpu setting name -> value, the replicas' allocation policy); raises :class:`ConfigError`."""
    flags = _given(flags)
    _unknown(flags, _TOP_KEYS, "")
    out: dict[str, Any] = {}
    _top(flags, out)
    _unknown(_section(flags, "gfd"), _GFD_KEYS, "gfd.")  # GFD's own flags: known, ignored
    policy = _plugin(_section(flags, "plugin"), out)
    return out, policy
