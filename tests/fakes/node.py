"""Fakes for exporter tests: a fake node filesystem (state directory + ``/proc`` tree), a fake NVML telemetry,
a fake kubelet PodResources source, and cgroup-file builders for every supported layout.

Nothing here touches the real ``/proc``: everything is written under a ``tmp_path`` root (no socket, no
process: safe in the unit tier). Real behaviours it reproduces, the unkind ones included:

- ``/proc/<pid>/cgroup`` in each layout a node may have: cgroup v2 and v1, the systemd and cgroupfs drivers,
  containerd, CRI-O and Docker scope names, every QoS class, and a host process outside any pod;
- ``/proc/<pid>/status`` with ``NSpid`` (a container's process has one pid on the host and another in its pid
  namespace) and ``/proc/<pid>/stat`` with a process name holding spaces and parentheses (``(python
  (worker))``: a naive split of the line reads the wrong field) and the start time that tells a reused pid
  from the process that had it before;
- the shim's files as the shim writes them (``vcuda.config``, the usage file with live slots spread among free
  ones, each with its pid, host pid and start time);
- ``FakeTelemetry`` / ``FakePodResources``: NVML or the kubelet failing on every call (``failing``).

Not reproduced: files changing while they are read, processes that exit between listing and reading
(tests/security writes the hostile files: symlinks, FIFOs, huge or truncated files).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plugin.metrics.sources import ContainerName, GpuSample, ProcessSample, SourceError
from vcuda.model import GpuUuid
from vcuda.names import USAGE_FILE_NAME
from vcuda.shimfile import (
    MAX_PROCS,
    USAGE_FILE,
    USAGE_MAGIC,
    USAGE_VERSION,
    GpuLimit,
    ShimConfig,
    encode_config,
)

GIB = 1 << 30
MIB = 1 << 20


def cid(n: int) -> str:
    """A 64-hex container ID."""
    return f"{n:064x}"


def uid(n: int) -> str:
    """A pod UID in API form."""
    return f"{n:08x}-1111-2222-3333-{n:012x}"


# --- cgroup files: (pod uid, container id) -> /proc/<pid>/cgroup text -------------------------------


def v2_systemd(
    pod_uid: str, container_id: str, runtime: str = "cri-containerd", qos: str = "burstable"
) -> str:
    u = pod_uid.replace("-", "_")
    slice_ = f"kubepods-{qos}.slice/kubepods-{qos}-pod{u}.slice" if qos else f"kubepods-pod{u}.slice"
    return f"0::/kubepods.slice/{slice_}/{runtime}-{container_id}.scope\n"


def v2_cgroupfs(pod_uid: str, container_id: str, qos: str = "burstable") -> str:
    return f"0::/kubepods/{qos + '/' if qos else ''}pod{pod_uid}/{container_id}\n"


def v1_cgroupfs(pod_uid: str, container_id: str, qos: str = "besteffort") -> str:
    path = f"/kubepods/{qos}/pod{pod_uid}/{container_id}"
    lines = [f"12:memory:{path}", f"11:cpu,cpuacct:{path}", "10:devices:" + path, f"1:name=systemd:{path}"]
    return "\n".join(lines) + "\n"


def v1_systemd(pod_uid: str, container_id: str, runtime: str = "docker") -> str:
    u = pod_uid.replace("-", "_")
    path = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/{runtime}-{container_id}.scope"
    return f"12:memory:{path}\n11:pids:{path}\n1:name=systemd:{path}\n0::/\n"


HOST_PROCESS = "0::/system.slice/sshd.service\n"


# --- the fake node filesystem -------------------------------------------------------------------


@dataclass(frozen=True)
class FakeSlot:
    """One shim process slot: per-GPU (memory_used, launches, throttled_ns, refused_allocs)."""

    pid: int
    gpus: Sequence[tuple[int, int, int, int]]
    host_pid: int = 0
    start_time: int = 1000


@dataclass(frozen=True)
class FakeContainer:
    pod_uid: str
    namespace: str
    pod: str
    container: str
    gpus: Sequence[tuple[str, int, int, int]]  # uuid, memory limit bytes, core limit, soft limit
    slots: Sequence[FakeSlot] = ()

    @property
    def dir_name(self) -> str:
        return f"{self.pod_uid}_{self.container}"


def usage_bytes(gpu_count: int, slots: Sequence[FakeSlot]) -> bytes:
    """A usage file as the shim writes it, live slots spread over the 64 (free slots in between)."""
    raw: list[dict[str, object]] = [{} for _ in range(MAX_PROCS)]
    for i, s in enumerate(slots):
        gpus = [
            {"memory_used": m, "launches": n, "throttled_ns": t, "refused_allocs": r, "busy_ns": 0}
            for m, n, t, r in s.gpus
        ]
        raw[i * 3 + 1] = {
            "pid": s.pid,
            "state": 1,
            "start_time": s.start_time,
            "host_pid": s.host_pid,
            "gpus": gpus,
        }
    return USAGE_FILE.pack(
        {
            "magic": USAGE_MAGIC,
            "version": USAGE_VERSION,
            "size": USAGE_FILE.size,
            "gpu_count": gpu_count,
            "slot_count": MAX_PROCS,
            "slots": raw,
        }
    )


@dataclass
class FakeNodeFs:
    """A node's filesystem under ``root``: ``<root>/state`` (plugin state dir) and ``<root>/proc``."""

    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def add_container(self, c: FakeContainer) -> None:
        d = self.state_dir / "containers" / c.dir_name
        (d / "usage").mkdir(parents=True, exist_ok=True)
        limits = tuple(GpuLimit(GpuUuid(u), mem, core, soft) for u, mem, core, soft in c.gpus)
        (d / "vcuda.config").write_bytes(
            encode_config(ShimConfig(c.pod_uid, c.namespace, c.pod, c.container, limits))
        )
        if c.slots:
            (d / "usage" / USAGE_FILE_NAME).write_bytes(usage_bytes(len(c.gpus), c.slots))

    def remove_container(self, c: FakeContainer) -> None:
        d = self.state_dir / "containers" / c.dir_name
        for f in sorted(d.rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        d.rmdir()

    def add_process(self, host_pid: int, cgroup: str, *, ns_pid: int = 1, start_time: int = 1000) -> None:
        d = self.root / "proc" / str(host_pid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup").write_text(cgroup)
        (d / "status").write_text(f"Name:\tpython\nPid:\t{host_pid}\nNSpid:\t{host_pid}\t{ns_pid}\n")
        rest = " ".join(["S"] + ["0"] * 18 + [str(start_time)] + ["0"] * 30)
        (d / "stat").write_text(f"{host_pid} (python (worker)) {rest}\n")


# --- fake sources -------------------------------------------------------------------------------


@dataclass
class FakeTelemetry:
    """A fake NVML (implements GpuTelemetry); ``failing`` makes every call raise SourceError."""

    gpus: list[GpuSample] = field(default_factory=list)
    processes: list[ProcessSample] = field(default_factory=list)
    failing: bool = False

    def gpu_samples(self) -> Sequence[GpuSample]:
        if self.failing:
            raise SourceError("fake NVML: driver not loaded")
        return self.gpus

    def process_samples(self) -> Sequence[ProcessSample]:
        if self.failing:
            raise SourceError("fake NVML: driver not loaded")
        return self.processes


@dataclass
class FakePodResources:
    """A fake kubelet PodResources List (implements PodResourcesSource)."""

    live: set[ContainerName] = field(default_factory=set)
    failing: bool = False
    claims: dict[ContainerName, frozenset[str]] = field(default_factory=dict)
    """DRA: the kube-vgpu claim UIDs each container uses (PodResources ``dynamic_resources``)."""

    def live_containers(self) -> frozenset[ContainerName]:
        if self.failing:
            raise SourceError("fake kubelet: connection refused")
        return frozenset(self.live)

    def container_claims(self) -> dict[ContainerName, frozenset[str]]:
        if self.failing:
            raise SourceError("fake kubelet: connection refused")
        return dict(self.claims)


def h100(index: int, *, used: int = 0, util: float = 0.0) -> GpuSample:
    return GpuSample(GpuUuid(f"GPU-h100-{index}"), index, "NVIDIA H100 80GB HBM3", used, 80 * GIB, util)
