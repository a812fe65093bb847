"""The running node agent: the ``vcuda-core`` device plugin, health, node publishing and reclaim.

With ``--front-end=dra`` the agent runs the DRA driver (:mod:`plugin.dra`) instead of the device plugins
(``vcuda-core``, MIG) and their reclaimer, and publishes its GPUs under the inventory's ``other``.

The agent only runs its parts: :func:`plugin.wiring.build_agent` discovers the GPUs and builds them from the
settings and already-made adapters (a :class:`GpuSource`, a :class:`Cluster`, the PodResources ``List``), so
that tests run the very same object against fakes; :mod:`plugin.__main__` passes the real adapters.
"""

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from plugin.allocator import Allocator
from plugin.cdi import write_gpu_spec
from plugin.core.allocate import DeviceListStrategy
from plugin.core.cdi import DriverFiles
from plugin.core.dra import dra_inventory
from plugin.core.errors import MigLayoutChangedError
from plugin.core.gpu import GpuSource, NodeGpus
from plugin.core.gpumodes import ModePlan, sharing_labels
from plugin.core.inventory import node_view
from plugin.core.mig import mig_layout_change
from plugin.core.slices import slices
from plugin.health import HealthMonitor
from plugin.kube import Cluster, KubeError
from plugin.kubelet import Registrar
from plugin.metrics.sources import ViolationTally
from plugin.mig import MigPlugins
from plugin.node import NodePublisher
from plugin.nvidia import NvidiaPlugins, resolve_modes
from plugin.podresources import ListPodResources
from plugin.reclaim import Reclaimer
from plugin.server import DeviceBoard
from plugin.settings import Settings
from plugin.statedir import StateDir
from vcuda.model import GpuUuid
from vcuda.names import Names

if TYPE_CHECKING:
    from plugin.dra.node import DraNode
    from plugin.slicepublisher import PoolKeeper, SlicePublisher
    from plugin.watchdog import Watchdog

__all__ = ["CORE_SOCKET", "Agent", "ServedModes"]

log = logging.getLogger(__name__)
CORE_SOCKET = "kube-vgpu-core.sock"


class ServedModes:
    """The mode each GPU is served in, and NVIDIA's plugins for that plan. The agent changes both once, at
    start, for GPUs a container still holds in their old mode (plugin.nvidia); the allocator and the watchdog
    read the current plan."""

    def __init__(self, plan: ModePlan, nvidia_plugins: Callable[[ModePlan], NvidiaPlugins]) -> None:
        self._build = nvidia_plugins
        self.plan = plan
        self.nvidia = nvidia_plugins(plan)

    def change(self, plan: ModePlan) -> None:
        self.plan, self.nvidia = plan, self._build(plan)


@dataclass(frozen=True, slots=True, eq=False)
class Agent:
    """The node's parts, built by :func:`plugin.wiring.build_agent`; :meth:`run` serves them."""

    settings: Settings
    names: Names
    source: GpuSource  # discovered again to notice a changed MIG layout
    cluster: Cluster
    pod_resources: ListPodResources  # the kubelet's PodResources List (plugin.podresources)
    node_gpus: NodeGpus
    state: StateDir
    cdi_files: DriverFiles  # the driver's files for the GPUs' CDI spec (CDI device lists only)
    board: DeviceBoard  # vcuda-core's devices
    allocator: Allocator
    health: HealthMonitor  # calls health_changed
    node: NodePublisher
    reclaimer: Reclaimer
    registrar: Registrar  # vcuda-core's
    mig: MigPlugins
    mig_capable: bool
    mig_labels: Mapping[str, str]
    modes: ServedModes
    violations: ViolationTally  # kube_vgpu_container_limit_violations_total, for the exporter
    watchdog: "Watchdog | None"
    dra: "DraNode | None"  # --front-end=dra: the DRA driver instead of the device plugins
    pool: "PoolKeeper | None"
    slice_publisher: "SlicePublisher | None"
    unhealthy: dict[str, str]  # DRA: the GPUs last published unhealthy, read by the pool keeper
    on_health: Callable[[Mapping[GpuUuid, bool]], None] | None = None

    @property
    def nvidia(self) -> NvidiaPlugins:
        return self.modes.nvidia

    def ready(self) -> bool:
        """Registered with the kubelet (the device plugin, or the DRA driver in DRA mode)."""
        if self.dra is not None:
            return self.dra.plugin.registered.is_set()
        return self.registrar.registered.is_set()

    async def health_changed(self, healthy: Mapping[GpuUuid, bool]) -> None:
        """Publishes a change of health everywhere it shows: device lists, the Node, the DRA pool."""
        if self.on_health is not None:
            self.on_health(healthy)
        modes = self.modes.plan
        vcuda = modes.vcuda()
        await self.board.publish(slices([g for g in self.node_gpus.gpus if g.uuid in vcuda], healthy))
        await self.nvidia.publish(healthy)
        other = modes.other(self.node_gpus.gpus, healthy)
        view = node_view(self.node_gpus, healthy, self.settings.device_memory_scaling, self.names, other)
        if self.dra is not None:  # DRA mode: no GPU for the extender, no vcuda-memory
            view = replace(view, inventory=dra_inventory(view.inventory, self.dra.driver), memory_mib=0)
            self.unhealthy.clear()
            self.unhealthy.update({str(uuid): "unhealthy" for uuid, ok in healthy.items() if not ok})
            if self.pool is not None:
                self.pool.wake()
        product = view.labels.get(self.names.label("gpu.product"), "")
        sharing = sharing_labels(modes, product, self.names.label)
        await self.node.publish(replace(view, labels={**view.labels, **self.mig_labels, **sharing}))

    async def start(self) -> None:
        """Everything that must hold before the first registration: files, device list, node view."""
        self.state.prepare()
        await self._hold_mode_switches()
        if self.settings.device_list_strategy is DeviceListStrategy.CDI:
            s = self.settings
            write_gpu_spec(s.cdi_dir, s.cdi_prefix, self.node_gpus.gpus, self.cdi_files, s.cdi_spec_version)
        await self.health_changed(self.health.healthy)
        if self.dra is not None:
            return  # claims are removed by the kubelet's unprepare, never by the device plugin's reclaimer
        removed = await self.reclaimer.once(grace_s=0.0)
        if removed:
            log.info("removed %d leftover per-container directories at start-up", len(removed))

    async def _hold_mode_switches(self) -> None:
        """A GPU whose mode changes while a container holds it keeps its old mode (plugin.nvidia)."""
        s = self.settings
        served = await resolve_modes(
            self.modes.plan,
            state_root=s.state_dir,
            pod_resources=self.pod_resources,
            core=self.names.core,
            cluster=self.cluster,
            node=s.node_name,
        )
        if served != self.modes.plan:
            self.modes.change(served)

    async def run(self) -> None:
        """Serves until cancelled; raises :class:`MigLayoutChangedError` when the MIG layout changed."""
        await self.start()
        if self.dra is not None:
            await self._run_dra(self.dra)
            return
        log.info(
            "serving %d of %d GPUs as %s on node %s",
            len(self.modes.plan.vcuda()),
            len(self.node_gpus.gpus),
            self.names.core,
            self.settings.node_name,
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.registrar.run())
                tasks.create_task(self.health.run())
                tasks.create_task(self.node.run())
                tasks.create_task(self.reclaimer.run())
                tasks.create_task(self.mig.run())  # returns at once when no MIG resource is served
                tasks.create_task(self.nvidia.run())  # returns at once when every GPU is vcuda
                tasks.create_task(self.watch_mig_layout())
                if self.watchdog is not None:
                    tasks.create_task(self.watchdog.run())
        except* MigLayoutChangedError as group:
            raise group.exceptions[0] from None

    async def _run_dra(self, dra: "DraNode") -> None:
        log.info(
            "serving %d GPUs as DRA driver %s on node %s",
            len(self.node_gpus.gpus),
            dra.driver,
            self.settings.node_name,
        )
        if self.pool is not None and self.slice_publisher is not None:
            await self._own_slices(self.slice_publisher)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(dra.run())
            if self.pool is not None:
                tasks.create_task(self.pool.run())
            tasks.create_task(self.health.run())
            tasks.create_task(self.node.run())
            if self.watchdog is not None:
                tasks.create_task(self.watchdog.run())

    async def _own_slices(self, publisher: "SlicePublisher") -> None:
        """Slices owned by the Node, so that deleting the Node deletes them (best effort)."""
        try:
            node = await self.cluster.get_node(self.settings.node_name)
        except KubeError as err:
            log.warning("could not read node %s for its slices' owner: %s", self.settings.node_name, err)
            return
        uid = ((node or {}).get("metadata") or {}).get("uid")
        if isinstance(uid, str) and uid:
            publisher.own_by(uid)

    async def watch_mig_layout(self) -> None:
        """Re-discover every ``mig_rediscover_seconds`` on a MIG-capable node; raise on a changed layout.

        Someone ran ``nvidia-smi mig`` or a MIG manager: GPUs may have left or joined ``vcuda-core`` and MIG
        resources changed. Serving on is wrong and rebuilding in place would race the kubelet, so the plugin
        stops and its DaemonSet starts it again (allocation records on disk survive the restart)."""
        period = self.settings.mig_rediscover_seconds
        if period <= 0 or not self.mig_capable:
            return
        while True:
            await asyncio.sleep(period)
            try:
                now = await asyncio.to_thread(self.source.discover)
            except Exception as err:  # NVML trouble is health's business; look again next period
                log.warning("MIG re-discovery failed: %s", err)
                continue
            change = mig_layout_change(self.node_gpus.gpus, now.gpus)
            if change is not None:
                raise MigLayoutChangedError(change)
