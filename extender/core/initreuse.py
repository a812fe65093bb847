"""How the kubelet hands a pod's ``vcuda-core`` slices to its containers, and what the pod holds. Pure.

The kubelet's device manager (``pkg/kubelet/cm/devicemanager``: ``Allocate``, ``devicesToAllocate``,
``podDevices.add/removeContainerAllocatedResources``) admits a pod's containers one after another, init
containers first, and keeps a per-pod pool of *reusable* device IDs:

- every container (init, sidecar or app) takes its IDs from the pool first, any of them (Go map order), and
  only the rest from free devices (steered by ``GetPreferredAllocation``, the reused IDs as must-include);
- an init container's IDs join the pool once it is allocated: it has exited before the next one starts;
- a sidecar (``restartPolicy: Always``) or app container removes the IDs it holds from the pool: it runs for
  the pod's life, so no later container may share them;
- every ID stays allocated to the pod until it ends.

So on each GPU a pod holds the slices its containers took fresh, not the sum of their requests; its memory
(which the kubelet does not allocate) peaks at the largest phase, ``component-helpers``' ``PodRequests`` per
GPU: one init container with the sidecars started before it, or every app container with every sidecar.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from extender.core.load import GpuLoad
from vcuda.model import ContainerAssignment, ContainerKind, ContainerRequest, GpuShare, GpuUuid

__all__ = ["PodHold", "admit", "charges", "held", "net_charges", "plain", "reused"]

_Counts = Mapping[GpuUuid, int]


@dataclass(frozen=True, slots=True)
class PodHold:
    """One pod part-way through admission. ``pool``: reusable slices per GPU; ``cores``: slices held;
    ``sidecar_mib`` / ``app_mib``: memory of the sidecars and of apps plus sidecars; ``init_peak_mib``: the
    largest init phase (an init container with the sidecars started before it)."""

    pool: _Counts = field(default_factory=dict)
    cores: _Counts = field(default_factory=dict)
    sidecar_mib: _Counts = field(default_factory=dict)
    app_mib: _Counts = field(default_factory=dict)
    init_peak_mib: _Counts = field(default_factory=dict)


def plain(containers: Sequence[ContainerRequest]) -> bool:
    """No init container or sidecar: every container takes fresh slices and the pod holds their sum."""
    return all(c.kind is ContainerKind.APP for c in containers)


def reused(pool: _Counts, wanted: int) -> dict[GpuUuid, int] | None:
    """The slices per GPU a container asking ``wanted`` takes from the pool, or None when the kubelet's
    choice is random: it takes all of a pool no larger than ``wanted``, any ``wanted`` of a pool on one
    GPU, but a random part of a larger pool spread over several GPUs."""
    live = {g: n for g, n in pool.items() if n > 0}
    if wanted >= sum(live.values()):
        return live
    if len(live) == 1:
        return {g: wanted for g in live}
    return None


def _add(counts: _Counts, delta: _Counts, sign: int = 1) -> dict[GpuUuid, int]:
    out = dict(counts)
    for g, n in delta.items():
        out[g] = out.get(g, 0) + sign * n
    return {g: n for g, n in out.items() if n}


def admit(hold: PodHold, request: ContainerRequest, assignment: ContainerAssignment) -> PodHold:
    """The pod after the kubelet allocated ``assignment`` to the container (reusing the pool first)."""
    split = {s.uuid: s.cores for s in assignment.shares}
    mib = {s.uuid: s.memory_mib for s in assignment.shares}
    again = {g: min(n, hold.pool.get(g, 0)) for g, n in split.items()}
    fresh = _add(split, again, -1)
    cores = _add(hold.cores, fresh)
    if request.kind is ContainerKind.INIT:
        running = _add(hold.sidecar_mib, mib)
        peak = {
            g: max(hold.init_peak_mib.get(g, 0), running.get(g, 0)) for g in {*hold.init_peak_mib, *running}
        }
        return PodHold(_add(hold.pool, fresh), cores, hold.sidecar_mib, hold.app_mib, peak)
    pool = _add(hold.pool, again, -1)
    app = _add(hold.app_mib, mib)
    if request.kind is ContainerKind.APP:
        return PodHold(pool, cores, hold.sidecar_mib, app, hold.init_peak_mib)
    sidecars = _add(hold.sidecar_mib, mib)
    peak = {
        g: max(hold.init_peak_mib.get(g, 0), sidecars.get(g, 0)) for g in {*hold.init_peak_mib, *sidecars}
    }
    return PodHold(pool, cores, sidecars, app, peak)


def held(hold: PodHold) -> dict[GpuUuid, GpuLoad]:
    """What the pod holds on each GPU: the slices it took, memory at its largest phase."""
    gpus = {*hold.cores, *hold.app_mib, *hold.init_peak_mib}
    out = {
        g: GpuLoad(hold.cores.get(g, 0), max(hold.app_mib.get(g, 0), hold.init_peak_mib.get(g, 0)))
        for g in gpus
    }
    return {g: load for g, load in out.items() if not load.idle}


def net_charges(
    requests: Sequence[ContainerRequest], containers: Sequence[ContainerAssignment]
) -> tuple[ContainerAssignment, ...]:
    """What the ledger must reserve for a pod whose containers got ``containers``: the containers themselves
    for a plain pod, else one record per pod holding :func:`held` (the sum of the containers would count
    reused slices and memory of containers that never run together twice)."""
    if plain(requests):
        return tuple(containers)
    by_name = {c.name: c for c in containers}
    hold = PodHold()
    for request in requests:
        assignment = by_name.get(request.name)
        if assignment is not None:
            hold = admit(hold, request, assignment)
    return charges(hold)


def charges(hold: PodHold) -> tuple[ContainerAssignment, ...]:
    """:func:`held` as one record (no container name, no limit) the ledger can reserve and release."""
    shares = tuple(GpuShare(g, load.cores, load.memory_mib) for g, load in sorted(held(hold).items()))
    return (ContainerAssignment("", shares, core_limit=0),)
