"""The running node agent: discovery, the ``vcuda-core`` device plugin, health, node publishing and reclaim.

With ``--front-end=dra`` the agent runs the DRA driver (:mod:`plugin.dra`) instead of the device plugins
(``vcuda-core``, MIG) and their reclaimer, and publishes its GPUs under the inventory's ``other``.

Built from already-made adapters (a :class:`GpuSource`, a :class:`Cluster`, the PodResources client) so
that tests run the very same object against fakes; :mod:`plugin.__main__` builds the real adapters.
"""

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import grpc

from plugin.allocator import Allocator, PodResourcesSource
from plugin.api.deviceplugin.v1beta1 import api_pb2_grpc
from plugin.cdi import find_driver_files, write_gpu_spec
from plugin.core.allocate import DeviceListStrategy, PlanOptions
from plugin.core.cdi import DriverFiles
from plugin.core.dra import FrontEnd, dra_inventory, node_devices
from plugin.core.errors import ConfigError, MigLayoutChangedError
from plugin.core.gpu import Gpu, GpuSource, NodeGpus, XidEvent
from plugin.core.gpumodes import ModePlan, plan_modes, sharing_labels
from plugin.core.health import HealthPolicy
from plugin.core.inventory import node_view
from plugin.core.mig import mig_labels, mig_layout_change
from plugin.core.nvallocate import ShareOptions
from plugin.core.slices import slices
from plugin.health import HealthMonitor
from plugin.kube import Cluster, KubeError
from plugin.kubelet import Registrar
from plugin.metrics.sources import ViolationTally
from plugin.mig import MigOptions, MigPlugins, mig_capable
from plugin.node import NodePublisher
from plugin.nvidia import NvidiaOptions, NvidiaPlugins, resolve_modes
from plugin.nvml_loader import DriverRoot
from plugin.reclaim import Reclaimer
from plugin.server import DeviceBoard, DevicePluginServicer
from plugin.settings import Settings, load_nvidia_config
from plugin.statedir import StateDir, driver_files
from vcuda.model import GpuUuid
from vcuda.names import Names
from vcuda.signing import Verifier

if TYPE_CHECKING:
    from plugin.dra.claims import ClaimSource
    from plugin.dra.node import DraNode
    from plugin.slicepublisher import PoolKeeper, SlicePublisher
    from plugin.watchdog import PodEvictor, Watchdog

__all__ = ["Agent", "Timings"]

log = logging.getLogger(__name__)
CORE_SOCKET = "kube-vgpu-core.sock"


@dataclass(frozen=True, slots=True)
class Timings:
    """Loop periods; tests shorten them."""

    kubelet_poll_s: float = 0.2  # the kubelet-socket watch polls only where inotify is unavailable
    node_resync_s: float | None = None  # None: the setting ``node_resync_seconds``
    mps_check_s: float = 5.0  # how often each MPS daemon is asked whether it still answers


class Agent:
    def __init__(
        self,
        settings: Settings,
        *,
        source: GpuSource,
        cluster: Cluster,
        pod_resources: PodResourcesSource,
        verifier: Verifier,
        timings: Timings = Timings(),
        on_xid: Callable[[XidEvent], None] | None = None,
        on_health: Callable[[Mapping[GpuUuid, bool]], None] | None = None,
        evictor: "PodEvictor | None" = None,
        claims: "ClaimSource | None" = None,
        slices: "SlicePublisher | None" = None,
    ) -> None:
        self.settings = settings
        self._cdi: DriverFiles | None = None
        self.names = Names(settings.resource_domain)
        self._source = source
        self._cluster = cluster
        self._timings = timings
        self.node_gpus: NodeGpus = source.discover()
        self.gpus: Mapping[str, Gpu] = {g.uuid: g for g in self.node_gpus.gpus}
        self.state = StateDir(settings.state_dir)
        self.board = DeviceBoard()
        self.allocator = Allocator(
            names=self.names,
            node=settings.node_name,
            verifier=verifier,
            cluster=cluster,
            pod_resources=pod_resources,
            state=self.state,
            gpus=lambda: {u: g for u, g in self.gpus.items() if u in self.modes.vcuda()},  # vcuda mode only
            options=self._plan_options(),
        )
        policy = HealthPolicy(settings.ignored_xids, settings.xid_recovery_seconds)
        uuids = [GpuUuid(g.uuid) for g in self.node_gpus.gpus]
        self._on_health = on_health
        self._background: set[asyncio.Task[None]] = set()
        self.health = HealthMonitor(
            source, uuids, policy, self._health_changed, settings.health_probe_seconds, on_xid=on_xid
        )
        resync = timings.node_resync_s or settings.node_resync_seconds
        self.node = NodePublisher(
            cluster, settings.node_name, self.names, resync, gfd_coexistence=settings.gfd_coexistence
        )
        self.reclaimer = Reclaimer(
            state=self.state,
            cluster=cluster,
            node=settings.node_name,
            pod_resources=pod_resources,
            allocator=self.allocator,
            interval_s=settings.reclaim_interval_seconds,
            grace_s=settings.reclaim_grace_seconds,
        )
        self.registrar = Registrar(
            plugin_dir=settings.device_plugin_dir,
            socket_name=CORE_SOCKET,
            resource=self.names.core,
            add_servicer=self._add_servicer,
            poll_s=timings.kubelet_poll_s,
            on_registered=self._registered,
        )
        # MIG instances are served whole, one registration per resource, apart from vcuda-core (plugin.mig,
        # docs/mig.md). Raises MigConfigError (a ConfigError) for --mig-strategy=single with several profiles.
        self.mig = MigPlugins(
            self.node_gpus,
            source,
            self.names,
            MigOptions(
                strategy=settings.mig_strategy,
                plan=self._plan_options(),
                cdi_dir=settings.cdi_dir,
                cdi_files=self._cdi_files(),
                cdi_version=settings.cdi_spec_version,
                plugin_dir=settings.device_plugin_dir,
                policy=policy,
                probe_s=settings.health_probe_seconds,
                poll_s=timings.kubelet_poll_s,
            ),
        )
        capable = mig_capable(source, self.node_gpus.gpus)
        self._mig_capable = bool(capable)
        self._mig_labels = mig_labels(self.node_gpus.gpus, capable, settings.mig_strategy, self.names)
        # NVIDIA's modes (plugin.nvidia, docs/nvidia-plugin.md): which GPUs leave vcuda for nvidia.com/gpu.
        self.nvidia_config = load_nvidia_config(settings.config_file)
        self.modes: ModePlan = plan_modes(self.node_gpus.gpus, self.nvidia_config)
        self.nvidia = self._nvidia_plugins(self.modes)
        self.violations = ViolationTally()  # kube_vgpu_container_limit_violations_total, for the exporter
        self.watchdog = self._watchdog(cluster, evictor)
        self.dra = self._dra_node(claims) if settings.front_end is FrontEnd.DRA else None
        self._unhealthy: dict[str, str] = {}
        self._slices = slices
        self.pool = self._pool_keeper(slices) if self.dra is not None and slices is not None else None

    def _pool_keeper(self, publisher: "SlicePublisher") -> "PoolKeeper":
        """DRA: the node's ResourceSlices (plugin.core.resourceslice), published again on health changes."""
        from plugin.core.resourceslice import SliceOptions, pool_specs
        from plugin.slicepublisher import PoolKeeper, read_pcie_roots

        s = self.settings
        roots = read_pcie_roots({g.uuid: g.pci_bus_id for g in self.node_gpus.gpus})
        driver = self.dra.driver if self.dra is not None else ""

        def build() -> list[dict[str, object]]:
            found = {GpuUuid(k): v for k, v in roots.items()}
            options = SliceOptions(driver, s.node_name, dict(self._unhealthy), found, s.dra_unhealthy)
            return pool_specs(self.node_gpus, options, 0)

        return PoolKeeper(publisher, build, self._timings.node_resync_s or s.node_resync_seconds)

    def _dra_node(self, claims: "ClaimSource | None") -> "DraNode":
        """The DRA driver (plugin.dra) for ``--front-end=dra``; its CDI specs carry the driver's files."""
        from plugin.dra.node import DraNode  # only on DRA nodes

        if claims is None:
            raise ValueError("front end dra needs a ResourceClaim source")
        s = self.settings
        files = find_driver_files(DriverRoot(s.nvidia_driver_root, s.driver_host_root))
        devices = node_devices(self.node_gpus.gpus)
        return DraNode(
            s,
            claims=claims,
            state=self.state,
            gpus=lambda: devices,
            unhealthy=lambda: {uuid for uuid, ok in self.health.healthy.items() if not ok},
            plan=self._plan_options(),
            files=files,
            poll_s=self._timings.kubelet_poll_s,
        )

    def ready(self) -> bool:
        """Registered with the kubelet (the device plugin, or the DRA driver in DRA mode)."""
        if self.dra is not None:
            return self.dra.plugin.registered.is_set()
        return self.registrar.registered.is_set()

    def _watchdog(self, cluster: Cluster, evictor: "PodEvictor | None") -> "Watchdog | None":
        """NVML's processes against the shims (plugin.watchdog), when on and the source is NVML."""
        from plugin.watchdog import Watchdog, WatchdogOptions  # imports plugin.nvml: only where it runs

        s = self.settings
        if s.watchdog_interval_seconds <= 0 or not hasattr(self._source, "process_usage"):
            return None
        shared = [GpuUuid(g.uuid) for g in self.node_gpus.gpus if not g.mig_enabled]  # MIG: no shim
        options = WatchdogOptions(
            s.watchdog_interval_seconds, s.watchdog_context_overhead_mib << 20, s.watchdog_evict
        )
        nvml: Any = self._source
        return Watchdog(
            node=s.node_name,
            state_dir=s.state_dir,
            nvml=nvml,
            gpus=lambda: [u for u in shared if u in self.modes.vcuda()],  # whole/replica GPUs: no vcuda shim
            cluster=cluster,
            tally=self.violations,
            options=options,
            evictor=evictor,
        )

    def _nvidia_plugins(self, modes: ModePlan) -> NvidiaPlugins:
        """The nvidia.com/gpu resources of ``modes``; a resource MIG ``single`` serves too is refused."""
        clash = sorted(set(modes.resources()) & set(self.mig.resources))
        if clash:
            raise ConfigError(
                f"{clash[0]} is served by --mig-strategy=single and by NVIDIA's config; use mixed"
            )
        s, config = self.settings, self.nvidia_config
        share = ShareOptions(mps_dir=str(s.mps_dir))
        if config is not None:
            share = ShareOptions(
                mps_dir=str(s.mps_dir),
                isolation=config.extension.isolation,
                memory_mib=config.extension.memory_mib,
                fail_requests_greater_than_one=config.sharing.fail_requests_greater_than_one,
                policy=config.policy,
            )
        options = NvidiaOptions(
            plan=self._plan_options(),
            share=share,
            plugin_dir=s.device_plugin_dir,
            mps_control=s.mps_control,
            mps_check_s=self._timings.mps_check_s,
            poll_s=self._timings.kubelet_poll_s,
        )
        return NvidiaPlugins(modes, self.node_gpus.gpus, self.node_gpus.links, options, self.state)

    def _plan_options(self) -> PlanOptions:
        s = self.settings
        files = {}
        if s.device_list_strategy is DeviceListStrategy.DEVICE_SPECS:
            files = driver_files(s.nvidia_driver_root, s.driver_host_root)
        return PlanOptions(
            list_strategy=s.device_list_strategy,
            id_strategy=s.device_id_strategy,
            cdi_prefix=s.cdi_prefix,
            state_dir=str(s.state_dir),
            shim_dir=str(s.shim_dir),
            driver_files=files,
        )

    def _cdi_files(self) -> DriverFiles:
        """The driver's files for the CDI specs (libraries, tools, sockets, hooks; plugin.cdi), read once."""
        if self._cdi is None:
            s = self.settings
            self._cdi = DriverFiles()
            if s.device_list_strategy is DeviceListStrategy.CDI:
                self._cdi = find_driver_files(DriverRoot(s.nvidia_driver_root, s.driver_host_root))
        return self._cdi

    def _add_servicer(self, server: grpc.aio.Server) -> None:
        self.allocator.kubelet_session()  # a new server, before Register: earlier Allocates are suspects
        servicer = DevicePluginServicer(self.board, self.allocator)
        api_pb2_grpc.add_DevicePluginServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    def _registered(self) -> None:
        self.node.wake()
        task = asyncio.get_running_loop().create_task(self.allocator.reconcile())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _health_changed(self, healthy: Mapping[GpuUuid, bool]) -> None:
        if self._on_health is not None:
            self._on_health(healthy)
        vcuda = self.modes.vcuda()
        await self.board.publish(slices([g for g in self.node_gpus.gpus if g.uuid in vcuda], healthy))
        await self.nvidia.publish(healthy)
        other = self.modes.other(self.node_gpus.gpus, healthy)
        view = node_view(self.node_gpus, healthy, self.settings.device_memory_scaling, self.names, other)
        if self.dra is not None:  # DRA mode: no GPU for the extender, no vcuda-memory
            view = replace(view, inventory=dra_inventory(view.inventory, self.dra.driver), memory_mib=0)
            self._unhealthy = {str(uuid): "unhealthy" for uuid, ok in healthy.items() if not ok}
            if self.pool is not None:
                self.pool.wake()
        product = view.labels.get(self.names.label("gpu.product"), "")
        sharing = sharing_labels(self.modes, product, self.names.label)
        await self.node.publish(replace(view, labels={**view.labels, **self._mig_labels, **sharing}))

    async def start(self) -> None:
        """Everything that must hold before the first registration: files, device list, node view."""
        self.state.prepare()
        await self._hold_mode_switches()
        if self.settings.device_list_strategy is DeviceListStrategy.CDI:
            s = self.settings
            write_gpu_spec(
                s.cdi_dir, s.cdi_prefix, self.node_gpus.gpus, self._cdi_files(), s.cdi_spec_version
            )
        await self._health_changed(self.health.healthy)
        if self.dra is not None:
            return  # claims are removed by the kubelet's unprepare, never by the device plugin's reclaimer
        removed = await self.reclaimer.once(grace_s=0.0)
        if removed:
            log.info("removed %d leftover per-container directories at start-up", len(removed))

    async def _hold_mode_switches(self) -> None:
        """A GPU whose mode changes while a container holds it keeps its old mode (plugin.nvidia)."""
        s = self.settings
        served = await resolve_modes(
            self.modes,
            state_root=s.state_dir,
            pod_resources=s.pod_resources_socket,
            core=self.names.core,
            cluster=self._cluster,
            node=s.node_name,
        )
        if served != self.modes:
            self.modes, self.nvidia = served, self._nvidia_plugins(served)

    async def run(self) -> None:
        """Serves until cancelled; raises :class:`MigLayoutChangedError` when the MIG layout changed."""
        await self.start()
        if self.dra is not None:
            await self._run_dra(self.dra)
            return
        log.info("serving %d GPUs as %s on node %s", len(self.gpus), self.names.core, self.settings.node_name)
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
            "serving %d GPUs as DRA driver %s on node %s", len(self.gpus), dra.driver, self.settings.node_name
        )
        if self.pool is not None and self._slices is not None:
            await self._own_slices(self._slices)
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
            node = await self._cluster.get_node(self.settings.node_name)
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
        if period <= 0 or not self._mig_capable:
            return
        while True:
            await asyncio.sleep(period)
            try:
                now = await asyncio.to_thread(self._source.discover)
            except Exception as err:  # NVML trouble is health's business; look again next period
                log.warning("MIG re-discovery failed: %s", err)
                continue
            change = mig_layout_change(self.node_gpus.gpus, now.gpus)
            if change is not None:
                raise MigLayoutChangedError(change)
