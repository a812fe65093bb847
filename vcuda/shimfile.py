"""The per-container files the shim reads (config) and writes (usage), defined once for Python and C.

Config (written by the plugin at Allocate, read-only in the container): a fixed-size file of a header and
``MAX_GPUS`` GPU records; ``crc32`` covers the whole file with that field zeroed. A reader rejects a wrong
magic, an unknown layout version, a wrong size or a bad checksum (the shim then fails CUDA initialisation).

Usage (written by every shim process of the container, read by the node exporter): a header and
``MAX_PROCS`` process slots, each with per-GPU counters.

Node (``<node dir>``, read-only in every container): ``tenants/<pod-uid>_<container>/<gpu uuid>.bin`` is one
container's record for one GPU (its compute budget and its processes' busy spans); only the container's own
``tenants/<name>`` directory is mounted writable. ``placed/<gpu uuid>`` (plugin only) lists the throttled
containers placed on that GPU: a shim counts only those as neighbours. Standard library only.
"""

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from vcuda.errors import ContractError
from vcuda.layout import Field, Struct
from vcuda.model import GpuUuid
from vcuda.units import CORE_PER_GPU

__all__ = [
    "CONFIG_HEADER",
    "CONFIG_MAGIC",
    "CONFIG_VERSION",
    "GPU_RECORD",
    "MAX_GPUS",
    "MAX_PROCS",
    "NODE_FILE",
    "NODE_MAGIC",
    "NODE_PLACED_DIR",
    "NODE_TENANTS_DIR",
    "NODE_VERSION",
    "PLACED_MAGIC",
    "PLACED_MAX",
    "PLACED_MAX_BYTES",
    "USAGE_FILE",
    "USAGE_MAGIC",
    "USAGE_VERSION",
    "GpuLimit",
    "ShimConfig",
    "decode_config",
    "decode_placement",
    "encode_placement",
    "encode_config",
    "decode_usage",
    "ProcessSlot",
    "GpuCounters",
    "empty_usage_file",
]

MAX_GPUS: Final = 16
MAX_PROCS: Final = 64
CONFIG_MAGIC: Final = b"VCUDACFG"
CONFIG_VERSION: Final = 1
USAGE_MAGIC: Final = b"VCUDAUSE"
USAGE_VERSION: Final = 2  # 2: the trailing lock word
UUID_BYTES: Final = 96  # NVML_DEVICE_UUID_V2_BUFFER_SIZE
NODE_MAGIC: Final = b"VCUDANOD"
NODE_VERSION: Final = 2  # 2: one record file per container and GPU, with the container's compute budget
NODE_SLOTS: Final = 16  # shim processes of one container on one GPU
NODE_TENANTS_DIR: Final = "tenants"  # <node dir>/tenants/<pod-uid>_<container>/<gpu uuid>.bin
NODE_PLACED_DIR: Final = "placed"  # <node dir>/placed/<gpu uuid>: written by the plugin only
PLACED_MAGIC: Final = "VCUDAPLC"
PLACED_MAX: Final = 64  # containers listed per GPU
PLACED_MAX_BYTES: Final = 16384  # the shim reads no more of a placement file
_PLACED_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
NODE_SPANS: Final = 16
USAGE_LOCK_BYTES: Final = 64  # the shim's lock word (owner slot + pid), padded to a cache line


def _file_head(magic: bytes) -> tuple[Field, ...]:
    """How every shim file begins: magic, layout version and total size, which tell a reader what it holds."""
    return (
        Field("magic", "char", len(magic), f'"{magic.decode()}" without a terminator'),
        Field("version", "u32", doc="layout version"),
        Field("size", "u32", doc="total file size in bytes"),
    )


GPU_RECORD: Final = Struct(
    "vcuda_gpu_record",
    (
        Field("uuid", "char", UUID_BYTES, "GPU UUID as NVML prints it, NUL-terminated"),
        Field("memory_limit", "u64", doc="bytes this container may hold on the GPU"),
        Field("core_limit", "u32", doc="hard compute share in percent, 1..100 (100 = no throttling)"),
        Field("soft_limit", "u32", doc="elastic ceiling in percent, >= core_limit (== it when hard)"),
    ),
    "One GPU the container may use.",
)

CONFIG_HEADER: Final = Struct(
    "vcuda_config",
    (
        *_file_head(CONFIG_MAGIC),
        Field("gpu_count", "u32", doc="records in use, 1..VCUDA_MAX_GPUS"),
        Field("crc32", "u32", doc="zlib crc32 of the whole file with this field zero"),
        Field("pod_uid", "char", 64),
        Field("namespace_", "char", 64),
        Field("pod_name", "char", 256),
        Field("container", "char", 64),
        Field("gpus", GPU_RECORD, MAX_GPUS),
    ),
    "The per-container shim config file.",
)

GPU_USAGE: Final = Struct(
    "vcuda_gpu_usage",
    (
        Field("memory_used", "u64", doc="bytes held by this process on this GPU"),
        Field("launches", "u64", doc="kernel and graph launches (flushed periodically)"),
        Field("throttled_ns", "u64", doc="time launches waited for compute budget"),
        Field("refused_allocs", "u64", doc="allocations refused over the memory limit"),
        Field("busy_ns", "u64", doc="estimated GPU busy time of this process"),
    ),
    "One process's counters on one GPU (index = config record index).",
)

PROC_SLOT: Final = Struct(
    "vcuda_proc_slot",
    (
        Field("pid", "i32", doc="0 = free slot; pid in the container's namespace"),
        Field("state", "u32", doc="0 free, 1 live"),
        Field("start_time", "u64", doc="process start time (clock ticks) to tell a reused pid"),
        Field("host_pid", "i32", doc="pid on the node when known, else 0"),
        Field("pad", "u32"),
        Field("gpus", GPU_USAGE, MAX_GPUS),
    ),
    "One process of the container.",
)

USAGE_FILE: Final = Struct(
    "vcuda_usage",
    (
        *_file_head(USAGE_MAGIC),
        Field("gpu_count", "u32"),
        Field("slot_count", "u32"),
        Field("memory_used", "u64", MAX_GPUS, "bytes held per GPU by all live processes"),
        Field("slots", PROC_SLOT, MAX_PROCS),
        Field("lock", "char", USAGE_LOCK_BYTES, "shim-private crash-safe lock word (readers ignore it)"),
    ),
    "The per-container usage file shared by the shim processes and the exporter.",
)


@dataclass(frozen=True, slots=True)
class GpuLimit:
    uuid: GpuUuid
    memory_limit_bytes: int
    core_limit: int
    soft_limit: int


@dataclass(frozen=True, slots=True)
class ShimConfig:
    pod_uid: str
    namespace: str
    pod_name: str
    container: str
    gpus: tuple[GpuLimit, ...]


def encode_config(config: ShimConfig) -> bytes:
    _check_limits(config)
    values: dict[str, Any] = {
        "magic": CONFIG_MAGIC,
        "version": CONFIG_VERSION,
        "size": CONFIG_HEADER.size,
        "gpu_count": len(config.gpus),
        "crc32": 0,
        "pod_uid": config.pod_uid,
        "namespace_": config.namespace,
        "pod_name": config.pod_name,
        "container": config.container,
        "gpus": [
            {
                "uuid": g.uuid,
                "memory_limit": g.memory_limit_bytes,
                "core_limit": g.core_limit,
                "soft_limit": g.soft_limit,
            }
            for g in config.gpus
        ],
    }
    unsigned = CONFIG_HEADER.pack(values)
    return CONFIG_HEADER.pack({**values, "crc32": zlib.crc32(unsigned)})


def decode_config(data: bytes) -> ShimConfig:
    if len(data) != CONFIG_HEADER.size:
        raise ContractError(f"shim config is {len(data)} bytes, expected {CONFIG_HEADER.size}")
    raw = CONFIG_HEADER.unpack(data)
    if raw["magic"] != CONFIG_MAGIC:
        raise ContractError("shim config: bad magic (not a kube-vgpu config file)")
    if raw["version"] != CONFIG_VERSION:
        raise ContractError(f"shim config: layout version {raw['version']}, expected {CONFIG_VERSION}")
    crc_at = CONFIG_HEADER.offset("crc32")
    zeroed = data[:crc_at] + b"\0\0\0\0" + data[crc_at + 4 :]
    if zlib.crc32(zeroed) != raw["crc32"] or raw["size"] != len(data):
        raise ContractError("shim config: checksum or size mismatch (corrupt file)")
    count = raw["gpu_count"]
    config = ShimConfig(
        pod_uid=raw["pod_uid"].decode(),
        namespace=raw["namespace_"].decode(),
        pod_name=raw["pod_name"].decode(),
        container=raw["container"].decode(),
        gpus=tuple(
            GpuLimit(GpuUuid(g["uuid"].decode()), g["memory_limit"], g["core_limit"], g["soft_limit"])
            for g in raw["gpus"][:count]
        ),
    )
    _check_limits(config)
    return config


def _check_limits(config: ShimConfig) -> None:
    if not 1 <= len(config.gpus) <= MAX_GPUS:
        raise ContractError(f"shim config: {len(config.gpus)} GPUs, expected 1..{MAX_GPUS}")
    for g in config.gpus:
        if not 1 <= g.core_limit <= g.soft_limit <= CORE_PER_GPU or g.memory_limit_bytes <= 0:
            raise ContractError(f"shim config: GPU {g.uuid} has limits out of range")


@dataclass(frozen=True, slots=True)
class GpuCounters:
    """What one shim process counted on one GPU (``vcuda_gpu_usage`` in its usage-file slot). Not
    :class:`plugin.nvml.GpuUsage`, which is NVML's view of the whole physical GPU."""

    memory_used: int
    launches: int
    throttled_ns: int
    refused_allocs: int
    busy_ns: int


@dataclass(frozen=True, slots=True)
class ProcessSlot:
    """One live slot of a container's usage file: a shim process and its counters per GPU (config-record
    order). Not :class:`plugin.nvml.ProcessUsage`, which is NVML's sample of a host process."""

    pid: int
    host_pid: int
    start_time: int
    gpus: tuple[GpuCounters, ...]


def empty_usage_file(gpu_count: int) -> bytes:
    return USAGE_FILE.pack(
        {
            "magic": USAGE_MAGIC,
            "version": USAGE_VERSION,
            "size": USAGE_FILE.size,
            "gpu_count": gpu_count,
            "slot_count": MAX_PROCS,
        }
    )


def decode_usage(data: bytes) -> tuple[ProcessSlot, ...]:
    """The live process slots of a usage file, GPU counters in config-record order."""
    raw = USAGE_FILE.unpack(data)
    if raw["magic"] != USAGE_MAGIC or raw["version"] != USAGE_VERSION:
        raise ContractError("usage file: bad magic or unknown version")
    count = min(raw["gpu_count"], MAX_GPUS)
    return tuple(
        ProcessSlot(
            pid=slot["pid"],
            host_pid=slot["host_pid"],
            start_time=slot["start_time"],
            gpus=tuple(GpuCounters(**g) for g in slot["gpus"][:count]),
        )
        for slot in raw["slots"]
        if slot["state"] == 1 and slot["pid"] > 0
    )


NODE_SLOT: Final = Struct(
    "vcuda_node_slot",
    (
        Field("owner", "u64", doc="0 = free; random token of the shim process that claimed the slot"),
        Field("pid", "i32", doc="the owner's pid in the container (a dead owner's spans are ignored)"),
        Field("pad", "u32"),
        Field("heartbeat_ns", "u64", doc="CLOCK_MONOTONIC of the owner's last controller step"),
        Field("open_since", "u64", doc="start of work in flight not yet measured; 0 = none"),
        Field("open_until", "u64", doc="owner's estimate of when that work ends (bounds a stalled owner)"),
        Field("span_count", "u64", doc="spans published so far; span i is at index i % VCUDA_NODE_SPANS"),
        Field("span_start", "u64", NODE_SPANS, doc="measured busy spans, CLOCK_MONOTONIC ns"),
        Field("span_end", "u64", NODE_SPANS),
    ),
    "One shim process of the container on this GPU: when it had work queued on the GPU.",
)

NODE_FILE: Final = Struct(
    "vcuda_node",
    (
        *_file_head(NODE_MAGIC),
        Field("slot_count", "u32"),
        Field("pad", "u32"),
        Field("tokens_ns", "i64", doc="the container's compute budget on this GPU (GPU ns; negative = debt)"),
        Field("refill_ns", "u64", doc="CLOCK_MONOTONIC of the budget's last refill"),
        Field("pad2", "u64", 4),
        Field("slots", NODE_SLOT, NODE_SLOTS),
    ),
    "One container's record for one GPU: its compute budget (shared by its processes) and their busy spans.",
)


def encode_placement(tenants: Sequence[tuple[str, int]]) -> bytes:
    """The plugin's list of throttled containers placed on one GPU: ``(record dir name, core percent)``."""
    lines = [f"{PLACED_MAGIC} {NODE_VERSION}"]
    for name, core in tenants[:PLACED_MAX]:
        if not _PLACED_NAME.fullmatch(name) or not 1 <= core <= CORE_PER_GPU:
            raise ContractError(f"placement entry {name!r} {core} is not valid")
        lines.append(f"{name} {core}")
    return ("\n".join(lines) + "\n").encode()


def decode_placement(data: bytes) -> tuple[tuple[str, int], ...]:
    """Inverse of :func:`encode_placement`; raises ContractError on anything else."""
    try:
        lines = data[:PLACED_MAX_BYTES].decode("ascii").splitlines()
        if not lines or lines[0] != f"{PLACED_MAGIC} {NODE_VERSION}":
            raise ContractError("placement file: bad magic or version")
        out = [(name, int(core)) for name, core in (line.split(" ") for line in lines[1 : PLACED_MAX + 1])]
    except (UnicodeDecodeError, ValueError) as err:
        raise ContractError(f"placement file: {err}") from err
    return tuple(out)
