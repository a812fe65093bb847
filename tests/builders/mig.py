"""Builders for MIG tests: FAKE A100 40GB GPUs with MIG instances (plain values, no NVML)."""

from plugin.core.gpu import Gpu, MigInstance
from vcuda.model import GpuUuid

PROFILE_MEMORY = {"1g.5gb": (4864, 14), "2g.10gb": (9856, 28), "3g.20gb": (19968, 42), "7g.40gb": (40192, 98)}
A100_PROFILES = ["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb", "1g.5gb+me", "1g.10gb"]


def mig(parent: str, gi: int, profile: str, ci: int = 0) -> MigInstance:
    memory, sms = PROFILE_MEMORY.get(profile.split("c.")[-1], (1, 1))
    return MigInstance(f"MIG-{parent[4:12]}-{gi}-{ci}", GpuUuid(parent), profile, gi, ci, memory, sms)


def a100(index: int, *profiles: str, mig_enabled: bool | None = None, pending: bool | None = None) -> Gpu:
    """An A100 40GB; each profile given becomes one MIG instance (GPU instance ids 1, 2, ...)."""
    uuid = f"GPU-a100{index:04d}-0000"
    enabled = bool(profiles) if mig_enabled is None else mig_enabled
    return Gpu(
        GpuUuid(uuid),
        index,
        index,
        "NVIDIA A100-SXM4-40GB",
        40960,
        f"0000:{index:02x}:00.0",
        numa_node=index // 2,
        compute_capability=(8, 0),
        mig_enabled=enabled,
        mig_pending=enabled if pending is None else pending,
        mig_instances=tuple(mig(uuid, gi, p) for gi, p in enumerate(profiles, start=1)),
    )
