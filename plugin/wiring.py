"""The node agent's parts, built from the settings and the discovered GPUs: the one place that wires them.

:func:`build_agent` discovers the GPUs, plans their modes and builds the device plugins (``vcuda-core``, MIG,
NVIDIA's modes), the DRA driver, health, node publishing, reclaim and the watchdog; the :class:`Agent` it
returns only runs them. :mod:`plugin.__main__` calls it with the real adapters, the tests with fakes, so both
run the same wiring.
"""

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from plugin.agent import CORE_SOCKET, Agent, ServedModes
from plugin.allocator import Allocator, PodResourcesSource
from plugin.cdi import find_driver_files
from plugin.core.admission import Held
from plugin.core.allocate import DeviceListStrategy, PlanOptions
from plugin.core.cdi import DriverFiles
from plugin.core.dra import FrontEnd, node_devices
from plugin.core.errors import ConfigError
from plugin.core.gpu import GpuSource, NodeGpus, XidEvent
from plugin.core.gpumodes import ModePlan, plan_modes
from plugin.core.health import HealthPolicy
from plugin.core.mig import mig_labels
from plugin.core.nvallocate import ShareOptions
from plugin.core.nvconfig import NvidiaConfig
from plugin.health import HealthMonitor, OnChange
from plugin.kube import Cluster
from plugin.kubelet import Registrar
from plugin.metrics.sources import ViolationTally
from plugin.mig import MigOptions, MigPlugins, mig_capable
from plugin.node import NodePublisher
from plugin.nvidia import NvidiaOptions, NvidiaPlugins
from plugin.nvml_loader import DriverRoot
from plugin.podresources import ListPodResources
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

__all__ = ["Timings", "build_agent"]


@dataclass(frozen=True, slots=True)
class Timings:
    """Loop periods; tests shorten them."""

    kubelet_poll_s: float = 0.2  # the kubelet-socket watch polls only where inotify is unavailable
    node_resync_s: float | None = None  # None: the setting ``node_resync_seconds``
    mps_check_s: float = 5.0  # how often each MPS daemon is asked whether it still answers


@dataclass(frozen=True, slots=True)
class _Ground:
    """What every part is built from: the settings, the discovered GPUs, the node's shared objects and the
    adapters to the cluster and the kubelet."""

    settings: Settings
    names: Names
    source: GpuSource
    node_gpus: NodeGpus
    state: StateDir
    plan: PlanOptions
    cdi_files: DriverFiles
    timings: Timings
    cluster: Cluster
    pod_resources: ListPodResources

    def held(self) -> PodResourcesSource:
        """The allocator's view of PodResources: every listed container with its ``vcuda-core`` IDs."""
        core, list_pods = self.names.core, self.pod_resources

        async def held() -> list[Held]:
            return (await list_pods()).held(core)

        return held

    @property
    def resync_s(self) -> float:
        return self.timings.node_resync_s or self.settings.node_resync_seconds


class _Relay:
    """The health monitor's ``on_change``, handed on to the agent that holds the monitor once it is built."""

    def __init__(self) -> None:
        self._to: OnChange | None = None

    def bind(self, to: OnChange) -> None:
        self._to = to

    async def __call__(self, healthy: Mapping[GpuUuid, bool]) -> None:
        assert self._to is not None, "bound by build_agent before the monitor runs"
        await self._to(healthy)


def build_agent(
    settings: Settings,
    *,
    source: GpuSource,
    cluster: Cluster,
    pod_resources: ListPodResources,
    verifier: Verifier,
    timings: Timings = Timings(),
    on_xid: Callable[[XidEvent], None] | None = None,
    on_health: Callable[[Mapping[GpuUuid, bool]], None] | None = None,
    evictor: "PodEvictor | None" = None,
    claims: "ClaimSource | None" = None,
    slices: "SlicePublisher | None" = None,
) -> Agent:
    """Discovers the GPUs of ``source`` and builds the agent's parts; raises :class:`ConfigError` for a
    configuration the GPUs cannot serve (MIG ``single`` with several profiles, a resource served twice)."""
    node_gpus = source.discover()
    ground = _Ground(
        settings,
        Names(settings.resource_domain),
        source,
        node_gpus,
        StateDir(settings.state_dir),
        _plan_options(settings),
        _cdi_files(settings),
        timings,
        cluster,
        pod_resources,
    )
    policy = HealthPolicy(settings.ignored_xids, settings.xid_recovery_seconds)
    # MIG instances are served whole, one registration per resource, apart from vcuda-core (plugin.mig,
    # docs/mig.md). Raises MigConfigError (a ConfigError) for --mig-strategy=single with several profiles.
    mig = MigPlugins(node_gpus, source, ground.names, _mig_options(ground, policy))
    capable = mig_capable(source, node_gpus.gpus)
    # NVIDIA's modes (plugin.nvidia, docs/nvidia-plugin.md): which GPUs leave vcuda for nvidia.com/gpu.
    config = load_nvidia_config(settings.config_file)
    modes = ServedModes(plan_modes(node_gpus.gpus, config), _nvidia_plugins(ground, config, mig))
    allocator = _allocator(ground, verifier, modes)
    relay = _Relay()
    uuids = [GpuUuid(g.uuid) for g in node_gpus.gpus]
    health = HealthMonitor(source, uuids, policy, relay, settings.health_probe_seconds, on_xid=on_xid)
    node = NodePublisher(
        cluster, settings.node_name, ground.names, ground.resync_s, gfd_coexistence=settings.gfd_coexistence
    )
    board = DeviceBoard()  # vcuda-core's devices
    violations = ViolationTally()  # kube_vgpu_container_limit_violations_total, for the exporter
    dra = _dra_node(ground, claims, health) if settings.front_end is FrontEnd.DRA else None
    unhealthy: dict[str, str] = {}
    agent = Agent(
        settings=settings,
        names=ground.names,
        source=source,
        cluster=cluster,
        pod_resources=pod_resources,
        node_gpus=node_gpus,
        state=ground.state,
        cdi_files=ground.cdi_files,
        board=board,
        allocator=allocator,
        health=health,
        node=node,
        reclaimer=_reclaimer(ground, allocator),
        registrar=_core_registrar(ground, board, allocator, node),
        mig=mig,
        mig_capable=bool(capable),
        mig_labels=mig_labels(node_gpus.gpus, capable, settings.mig_strategy, ground.names),
        modes=modes,
        violations=violations,
        watchdog=_watchdog(ground, violations, modes, evictor, dra),
        dra=dra,
        pool=_pool_keeper(ground, dra, slices, unhealthy) if dra is not None and slices is not None else None,
        slice_publisher=slices,
        unhealthy=unhealthy,
        on_health=on_health,
    )
    relay.bind(agent.health_changed)
    return agent


def _allocator(ground: _Ground, verifier: Verifier, modes: ServedModes) -> Allocator:
    """vcuda-core's Allocate flow, over the GPUs served in vcuda mode (the plan the agent serves now)."""
    gpus = ground.node_gpus.gpus
    return Allocator(
        names=ground.names,
        node=ground.settings.node_name,
        verifier=verifier,
        cluster=ground.cluster,
        pod_resources=ground.held(),
        state=ground.state,
        gpus=lambda: {g.uuid: g for g in gpus if g.uuid in modes.plan.vcuda()},
        options=ground.plan,
    )


def _reclaimer(ground: _Ground, allocator: Allocator) -> Reclaimer:
    s = ground.settings
    return Reclaimer(
        state=ground.state,
        cluster=ground.cluster,
        node=s.node_name,
        pod_resources=ground.held(),
        allocator=allocator,
        interval_s=s.reclaim_interval_seconds,
        grace_s=s.reclaim_grace_seconds,
    )


def _core_registrar(
    ground: _Ground, board: DeviceBoard, allocator: Allocator, node: NodePublisher
) -> Registrar:
    """vcuda-core's registration with the kubelet, a new servicer on each new gRPC server."""
    background: set[asyncio.Task[None]] = set()

    def add_servicer(server: grpc.aio.Server) -> None:
        allocator.kubelet_session()  # a new server, before Register: earlier Allocates are suspects
        DevicePluginServicer(board, allocator).add_to(server)

    def registered() -> None:  # publish the node again, reconcile the allocations the kubelet holds
        node.wake()
        task = asyncio.get_running_loop().create_task(allocator.reconcile())
        background.add(task)
        task.add_done_callback(background.discard)

    return Registrar(
        plugin_dir=ground.settings.device_plugin_dir,
        socket_name=CORE_SOCKET,
        resource=ground.names.core,
        add_servicer=add_servicer,
        poll_s=ground.timings.kubelet_poll_s,
        on_registered=registered,
    )


def _plan_options(s: Settings) -> PlanOptions:
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


def _cdi_files(s: Settings) -> DriverFiles:
    """The driver's files for the CDI specs (libraries, tools, sockets, hooks; plugin.cdi), read once."""
    if s.device_list_strategy is DeviceListStrategy.CDI:
        return find_driver_files(DriverRoot(s.nvidia_driver_root, s.driver_host_root))
    return DriverFiles()


def _mig_options(ground: _Ground, policy: HealthPolicy) -> MigOptions:
    s = ground.settings
    return MigOptions(
        strategy=s.mig_strategy,
        plan=ground.plan,
        cdi_dir=s.cdi_dir,
        cdi_files=ground.cdi_files,
        cdi_version=s.cdi_spec_version,
        plugin_dir=s.device_plugin_dir,
        policy=policy,
        probe_s=s.health_probe_seconds,
        poll_s=ground.timings.kubelet_poll_s,
    )


def _nvidia_plugins(
    ground: _Ground, config: NvidiaConfig | None, mig: MigPlugins
) -> Callable[[ModePlan], NvidiaPlugins]:
    """NVIDIA's plugins for a plan of modes; a resource MIG ``single`` serves too is refused."""
    s = ground.settings
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
        plan=ground.plan,
        share=share,
        plugin_dir=s.device_plugin_dir,
        mps_control=s.mps_control,
        mps_check_s=ground.timings.mps_check_s,
        mps_shm_size=s.mps_shm_size,
        poll_s=ground.timings.kubelet_poll_s,
    )

    def build(modes: ModePlan) -> NvidiaPlugins:
        clash = sorted(set(modes.resources()) & set(mig.resources))
        if clash:
            raise ConfigError(
                f"{clash[0]} is served by --mig-strategy=single and by NVIDIA's config; use mixed"
            )
        return NvidiaPlugins(modes, ground.node_gpus.gpus, ground.node_gpus.links, options, ground.state)

    return build


def _watchdog(
    ground: _Ground,
    tally: ViolationTally,
    modes: ServedModes,
    evictor: "PodEvictor | None",
    dra: "DraNode | None" = None,
) -> "Watchdog | None":
    """NVML's processes against the shims (plugin.watchdog), when on and the source is NVML."""
    from plugin.watchdog import Watchdog, WatchdogOptions  # imports plugin.nvml: only where it runs

    s = ground.settings
    if s.watchdog_interval_seconds <= 0 or not hasattr(ground.source, "process_usage"):
        return None
    shared = [GpuUuid(g.uuid) for g in ground.node_gpus.gpus if not g.mig_enabled]  # MIG: no shim
    options = WatchdogOptions(
        s.watchdog_interval_seconds, s.watchdog_context_overhead_mib << 20, s.watchdog_evict
    )
    nvml: Any = ground.source
    return Watchdog(
        node=s.node_name,
        state_dir=s.state_dir,
        nvml=nvml,
        gpus=lambda: [u for u in shared if u in modes.plan.vcuda()],  # whole/replica GPUs: no vcuda shim
        cluster=ground.cluster,
        tally=tally,
        options=options,
        evictor=evictor,
        claims=dra.preparer.claim_dirs if dra is not None else dict,  # pods sharing a claim (plugin.watchdog)
    )


def _dra_node(ground: _Ground, claims: "ClaimSource | None", health: HealthMonitor) -> "DraNode":
    """The DRA driver (plugin.dra) for ``--front-end=dra``; its CDI specs carry the driver's files."""
    from plugin.dra.node import DraNode  # only on DRA nodes

    if claims is None:
        raise ValueError("front end dra needs a ResourceClaim source")
    s = ground.settings
    files = find_driver_files(DriverRoot(s.nvidia_driver_root, s.driver_host_root))
    devices = node_devices(ground.node_gpus.gpus)
    return DraNode(
        s,
        claims=claims,
        state=ground.state,
        gpus=lambda: devices,
        unhealthy=lambda: {uuid for uuid, ok in health.healthy.items() if not ok},
        plan=ground.plan,
        files=files,
        poll_s=ground.timings.kubelet_poll_s,
    )


def _pool_keeper(
    ground: _Ground, dra: "DraNode", publisher: "SlicePublisher", unhealthy: Mapping[str, str]
) -> "PoolKeeper":
    """DRA: the node's ResourceSlices (plugin.core.resourceslice), published again on health changes;
    ``unhealthy`` is the agent's last published health, which it keeps up to date."""
    from plugin.core.resourceslice import SliceOptions, pool_specs
    from plugin.slicepublisher import PoolKeeper, read_pcie_roots

    s, gpus = ground.settings, ground.node_gpus
    roots = read_pcie_roots({g.uuid: g.pci_bus_id for g in gpus.gpus})

    def build() -> list[dict[str, object]]:
        found = {GpuUuid(k): v for k, v in roots.items()}
        options = SliceOptions(dra.driver, s.node_name, dict(unhealthy), found, s.dra_unhealthy)
        return pool_specs(gpus, options, 0)

    return PoolKeeper(publisher, build, ground.resync_s)
