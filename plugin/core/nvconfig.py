"""NVIDIA's plugin config file (``version: v1``, ``flags`` and ``sharing``), read as NVIDIA documents it.

Both NVIDIA's file and kube-vgpu's own are ``version: v1``; they are told apart by their keys
(:func:`is_nvidia_config`): a file with any of NVIDIA's top-level keys (``flags``, ``sharing``, ``resources``,
``imex``) is NVIDIA's, since none of them is a kube-vgpu setting. Semantics follow NVIDIA's ``api/config/v1``
(k8s-device-plugin): resource names get the ``nvidia.com/`` prefix when they have none, ``replicas`` must be
at least 2 (and, here, at most :data:`MAX_REPLICAS`), ``devices`` is ``all`` (the default), a count (the first
N GPUs) or a list of GPU indexes and UUIDs, ``renameByDefault`` renames to ``<name>.shared``,
``failRequestsGreaterThanOne`` defaults to false for time-slicing and true for MPS. Stricter than NVIDIA's
parser on purpose: an unknown key, a wrong type or an impossible combination (time-slicing and MPS together,
replicas < 2, two renames to one name) is an error naming the key, never silently ignored.

kube-vgpu's own additions live under ``kubeVgpu`` (not NVIDIA's schema, which NVIDIA's own parser ignores):
``defaultMode`` (the mode of GPUs no sharing resource names: ``whole``, as NVIDIA serves them, or ``vcuda``),
``vcudaDevices`` (GPUs kept as vcuda shares, same forms as ``devices``) and ``timeSlicing.isolation`` with
``timeSlicing.memoryMiB`` (each replica gets the shim: docs/nvidia-plugin.md). Pure: plain dicts in.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from plugin.core.errors import ConfigError, shown
from plugin.core.nvflags import AllocationPolicy, flag_settings
from vcuda.model import GpuMode

__all__ = [
    "NVIDIA_KEYS",
    "RESOURCE_PREFIX",
    "AllocationPolicy",
    "DeviceSelector",
    "Extension",
    "NvidiaConfig",
    "ReplicatedResource",
    "Sharing",
    "SharingStrategy",
    "is_nvidia_config",
    "parse_nvidia_config",
]

RESOURCE_PREFIX: Final = "nvidia.com"
SHARED_SUFFIX: Final = ".shared"
MAX_RESOURCE_NAME: Final = 63
MAX_REPLICAS: Final = 1024
"""Every replica is a device ID in memory and in the device list: 1024 per GPU keeps a 16-GPU node's list far
below the kubelet's 4 MiB gRPC message; NVIDIA's plugin has no bound and runs out of memory at 10**9."""
NVIDIA_KEYS: Final = frozenset({"flags", "sharing", "resources", "imex"})
_TOP_KEYS: Final = NVIDIA_KEYS | {"version", "kubeVgpu"}


class SharingStrategy(StrEnum):
    """NVIDIA's ``nvidia.com/gpu.sharing-strategy`` label values."""

    NONE = "none"
    TIME_SLICING = "time-slicing"
    MPS = "mps"


@dataclass(frozen=True, slots=True)
class DeviceSelector:
    """``devices``: every GPU (``all``), the first ``count`` GPUs, or the GPUs named by index or UUID."""

    all: bool = True
    count: int = 0
    refs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplicatedResource:
    """One ``sharing.<strategy>.resources[]`` entry, names fully qualified."""

    name: str
    replicas: int
    devices: DeviceSelector = DeviceSelector()
    rename: str = ""

    @property
    def served_as(self) -> str:
        return self.rename or self.name


@dataclass(frozen=True, slots=True)
class Sharing:
    strategy: SharingStrategy = SharingStrategy.NONE
    resources: tuple[ReplicatedResource, ...] = ()
    fail_requests_greater_than_one: bool = False


@dataclass(frozen=True, slots=True)
class Extension:
    """The ``kubeVgpu`` section: kube-vgpu's own keys in NVIDIA's file."""

    default_mode: GpuMode = GpuMode.WHOLE
    vcuda_devices: DeviceSelector | None = None
    isolation: bool = False
    memory_mib: int = 0
    """Per-replica memory of isolated time-slicing; 0: the GPU's memory / replicas."""


@dataclass(frozen=True, slots=True)
class NvidiaConfig:
    settings: Mapping[str, Any] = field(default_factory=dict)
    """kube-vgpu settings (field names) taken from ``flags``."""
    sharing: Sharing = Sharing()
    policy: AllocationPolicy = AllocationPolicy.DISTRIBUTED
    extension: Extension = Extension()


def is_nvidia_config(doc: Mapping[str, Any]) -> bool:
    """Whether a ``version: v1`` document is NVIDIA's (it has one of NVIDIA's top-level keys)."""
    return any(k in doc for k in NVIDIA_KEYS)


def _fail(key: str, why: str) -> ConfigError:
    return ConfigError(f"{key}: {why}")


def _mapping(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, "must be a mapping")
    return value


def _unknown(doc: Mapping[str, Any], known: frozenset[str] | set[str], key: str) -> None:
    extra = sorted(str(k) for k in doc if k not in known)
    if extra:
        where = f"{key}.{extra[0]}" if key else extra[0]
        raise _fail(where, f"unknown key (known: {', '.join(sorted(known))})")


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, f"must be true or false, not {shown(value)}")
    return value


def _int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, f"must be an integer, not {shown(value)}")
    return value


def _str(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, not {shown(value)}")
    return value


def resource_name(raw: object, key: str) -> str:
    """NVIDIA's ``NewResourceName``: ``nvidia.com/`` prefixed when bare, at most 63 characters, a DNS
    subdomain after the prefix."""
    name = _str(raw, key)
    full = name if name.startswith(RESOURCE_PREFIX + "/") else f"{RESOURCE_PREFIX}/{name}"
    if len(full) > MAX_RESOURCE_NAME:
        raise _fail(key, f"{full!r} is longer than {MAX_RESOURCE_NAME} characters")
    if not _dns_subdomain(full.partition("/")[2]):
        raise _fail(key, f"{full!r}: the name after 'nvidia.com/' must be a DNS subdomain")
    return full


def _dns_subdomain(text: str) -> bool:
    labels = text.split(".")
    ok = all(p and p[0].isalnum() and p[-1].isalnum() for p in labels)
    return ok and all(ch.islower() or ch.isdigit() or ch in "-." for ch in text) and len(text) <= 253


def _ref(item: object, key: str) -> str:
    if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
        return str(item)
    if isinstance(item, str) and (item.isdigit() or _is_gpu_uuid(item)):
        return item
    if isinstance(item, str) and (item.startswith("MIG-") or ":" in item):
        raise _fail(key, f"{shown(item)}: MIG devices cannot be shared by kube-vgpu (name whole GPUs)")
    raise _fail(key, f"{shown(item)} is neither a GPU index nor a GPU UUID (GPU-xxxxxxxx-...)")


def _is_gpu_uuid(text: str) -> bool:
    body = text.removeprefix("GPU-")
    parts = body.split("-")
    sizes = [len(p) for p in parts]
    hexdigits = all(all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)
    return text.startswith("GPU-") and sizes == [8, 4, 4, 4, 12] and hexdigits


def parse_devices(raw: object, key: str) -> DeviceSelector:
    """``all``, a positive count, or a non-empty list of indexes / UUIDs (no duplicates)."""
    if raw == "all":
        return DeviceSelector()
    if isinstance(raw, str):
        raise _fail(key, f"{shown(raw)}: the only string allowed is 'all'")
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw <= 0:
            raise _fail(key, f"a count of devices must be > 0, not {raw}")
        return DeviceSelector(all=False, count=raw)
    if not isinstance(raw, list) or not raw:
        raise _fail(key, "must be 'all', a count or a non-empty list of GPU indexes and UUIDs")
    refs = tuple(_ref(item, f"{key}[{i}]") for i, item in enumerate(raw))
    if len(set(refs)) != len(refs):
        raise _fail(key, "names a GPU twice")
    return DeviceSelector(all=False, refs=refs)


_RESERVED: Final = ("vcuda-", "mig-")
_RESOURCE_KEYS: Final = frozenset({"name", "rename", "devices", "replicas"})


def _resource(raw: object, key: str, rename_by_default: bool) -> ReplicatedResource:
    doc = _mapping(raw, key)
    _unknown(doc, _RESOURCE_KEYS, key)
    for required in ("name", "replicas"):
        if required not in doc:
            raise _fail(f"{key}.{required}", "is required")
    name = resource_name(doc["name"], f"{key}.name")
    if name != f"{RESOURCE_PREFIX}/gpu":
        raise _fail(f"{key}.name", f"{name!r}: kube-vgpu shares whole GPUs only ('nvidia.com/gpu')")
    replicas = _int(doc["replicas"], f"{key}.replicas")
    if replicas < 2:
        raise _fail(f"{key}.replicas", f"must be >= 2 (as NVIDIA's plugin), not {replicas}")
    if replicas > MAX_REPLICAS:
        raise _fail(f"{key}.replicas", f"must be <= {MAX_REPLICAS} (one device ID each), not {replicas}")
    rename = resource_name(doc["rename"], f"{key}.rename") if "rename" in doc else ""
    if rename.partition("/")[2].startswith(_RESERVED):
        raise _fail(f"{key}.rename", f"{rename!r} collides with kube-vgpu's and MIG's resource names")
    if not rename and rename_by_default:
        rename = name + SHARED_SUFFIX
    devices = parse_devices(doc.get("devices", "all"), f"{key}.devices")
    return ReplicatedResource(name, replicas, devices, "" if rename == name else rename)


_REPLICATED_KEYS: Final = frozenset({"renameByDefault", "failRequestsGreaterThanOne", "resources"})


def _replicated(raw: object, key: str, strategy: SharingStrategy) -> Sharing:
    doc = _mapping(raw, key)
    _unknown(doc, _REPLICATED_KEYS, key)
    by_default = _bool(doc.get("renameByDefault", False), f"{key}.renameByDefault")
    fail_default = strategy is SharingStrategy.MPS
    fail = _bool(doc.get("failRequestsGreaterThanOne", fail_default), f"{key}.failRequestsGreaterThanOne")
    items = doc.get("resources")
    if not isinstance(items, list) or not items:
        raise _fail(f"{key}.resources", "no resources specified (a non-empty list is required)")
    resources = tuple(_resource(r, f"{key}.resources[{i}]", by_default) for i, r in enumerate(items))
    explicit = [
        (i, r.rename) for i, (r, raw) in enumerate(zip(resources, items, strict=True)) if "rename" in raw
    ]
    _check_renames(explicit, f"{key}.resources")
    return Sharing(strategy, resources, fail)


def _check_renames(explicit: Sequence[tuple[int, str]], key: str) -> None:
    """An explicit rename given twice is a mistake; renameByDefault's ``<name>.shared`` may be shared (GPUs
    of several entries served as one resource, as NVIDIA's plugin does)."""
    seen: dict[str, int] = {}
    for i, rename in explicit:
        if rename and rename in seen:
            raise _fail(f"{key}[{i}].rename", f"{rename!r} is already the rename of {key}[{seen[rename]}]")
        seen.setdefault(rename, i)


def _sharing(raw: object) -> Sharing:
    doc = _mapping(raw, "sharing")
    _unknown(doc, frozenset({"timeSlicing", "mps"}), "sharing")
    present = [k for k in ("timeSlicing", "mps") if doc.get(k) is not None]
    if len(present) == 2:
        raise _fail("sharing", "timeSlicing and mps cannot be used together (one strategy per node)")
    if not present:
        return Sharing()
    strategy = SharingStrategy.MPS if present[0] == "mps" else SharingStrategy.TIME_SLICING
    return _replicated(doc[present[0]], f"sharing.{present[0]}", strategy)


def _extension(raw: object) -> Extension:
    doc = _mapping(raw, "kubeVgpu")
    _unknown(doc, frozenset({"defaultMode", "vcudaDevices", "timeSlicing"}), "kubeVgpu")
    mode = _str(doc.get("defaultMode", "whole"), "kubeVgpu.defaultMode")
    if mode not in (GpuMode.WHOLE, GpuMode.VCUDA):
        raise _fail("kubeVgpu.defaultMode", f"{mode!r}: must be 'whole' or 'vcuda'")
    vcuda = doc.get("vcudaDevices")
    ts = _mapping(doc.get("timeSlicing", {}), "kubeVgpu.timeSlicing")
    _unknown(ts, frozenset({"isolation", "memoryMiB"}), "kubeVgpu.timeSlicing")
    memory = _int(ts.get("memoryMiB", 0), "kubeVgpu.timeSlicing.memoryMiB")
    if memory < 0:
        raise _fail("kubeVgpu.timeSlicing.memoryMiB", f"must be >= 0, not {memory}")
    return Extension(
        default_mode=GpuMode(mode),
        vcuda_devices=None if vcuda is None else parse_devices(vcuda, "kubeVgpu.vcudaDevices"),
        isolation=_bool(ts.get("isolation", False), "kubeVgpu.timeSlicing.isolation"),
        memory_mib=memory,
    )


def _default_name(entry: object, kind: str) -> bool:
    """Whether a ``resources.<kind>[]`` entry names what NVIDIA's plugin serves anyway: ``gpu`` for every
    full GPU (``pattern: "*"``), ``mig-<pattern>`` (or ``gpu`` under the single strategy) for MIG devices."""
    if not isinstance(entry, Mapping) or set(entry) != {"pattern", "name"}:
        return False
    pattern, name = entry["pattern"], entry["name"]
    if not isinstance(pattern, str) or not isinstance(name, str):
        return False
    bare = name.removeprefix(RESOURCE_PREFIX + "/")
    if kind == "gpus":
        return pattern == "*" and bare == "gpu"
    return bare == f"mig-{pattern}" or (pattern == "*" and bare == "gpu")


def _check_resources(raw: object) -> None:
    """NVIDIA's plugin ignores ``resources`` (it always serves the default names) and logs the config it runs
    with, defaults included: those defaults are accepted, any other name refused (it would not be served)."""
    if not raw:
        return
    doc = _mapping(raw, "resources")
    _unknown(doc, frozenset({"gpus", "mig"}), "resources")
    for kind in ("gpus", "mig"):
        entries = doc.get(kind) or []
        if not isinstance(entries, list):
            raise _fail(f"resources.{kind}", "must be a list")
        for i, entry in enumerate(entries):
            if not _default_name(entry, kind):
                raise _fail(
                    f"resources.{kind}[{i}]",
                    "renaming GPU resources by pattern is not supported (NVIDIA's plugin ignores it too); "
                    "use sharing.<strategy>.resources[].rename",
                )


def _check_imex(raw: object) -> None:
    """An ``imex`` asking for nothing (no channels, not required: NVIDIA's plugin logs that) is fine."""
    if not raw:
        return
    doc = _mapping(raw, "imex")
    _unknown(doc, frozenset({"channelIDs", "required"}), "imex")
    if doc.get("channelIDs") or doc.get("required"):
        raise _fail("imex", "IMEX channels are not served by kube-vgpu")


def parse_nvidia_config(doc: Mapping[str, Any]) -> NvidiaConfig:
    """The validated config; raises :class:`ConfigError` naming the first bad key."""
    _unknown(doc, _TOP_KEYS, "")
    version = doc.get("version", "v1")
    if version != "v1":
        raise _fail("version", f"unknown version {shown(version)} (NVIDIA's config is v1)")
    _check_resources(doc.get("resources"))
    _check_imex(doc.get("imex"))
    settings, policy = flag_settings(_mapping(doc.get("flags") or {}, "flags"))
    sharing = _sharing(doc["sharing"]) if doc.get("sharing") is not None else Sharing()
    extension = _extension(doc["kubeVgpu"]) if doc.get("kubeVgpu") is not None else Extension()
    if extension.isolation and sharing.strategy is SharingStrategy.MPS:
        raise _fail("kubeVgpu.timeSlicing.isolation", "applies to time-slicing, but sharing uses mps")
    return NvidiaConfig(settings, sharing, policy, extension)
