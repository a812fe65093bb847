"""Composition root of ``kube-vgpu-plugin``: settings, logging, NVML, the API client, the kubelet, the agent.

Makes the adapters (NVML, the API client, PodResources, the exporter and the probes) and hands them to
:func:`plugin.wiring.build_agent`, which builds the agent's parts from the settings and the discovered GPUs.
Exit codes: 0 after ``--uninstall``, 2 for a bad configuration (the message names the field), 3 when NVML
cannot start and ``--fail-on-init-error`` is on, 4 when the GPUs' MIG layout changed while serving (the
DaemonSet starts the plugin again on the new layout).
"""

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kube_vgpu_cli.build import with_build_info
from kube_vgpu_cli.logs import configure_logging
from plugin.agent import Agent
from plugin.core.dra import FrontEnd
from plugin.core.errors import ConfigError, MigLayoutChangedError
from plugin.core.gpu import Gpu, GpuSource, NodeGpus
from plugin.core.mig_partition import PartitionSettings
from plugin.kube import ApiCluster
from plugin.kubeapi import ApiClient, CoreV1, new_api_client
from plugin.metrics.exporter import NodeCollector, serve
from plugin.metrics.sources import PodResourcesSource, ViolationTally, XidTally
from plugin.node import NodePublisher
from plugin.nvidia import quit_recorded_mps
from plugin.nvml_loader import NVML_LIBRARY, find_library, locate_driver_root
from plugin.podresources import ListPodResources, PodResourcesCache, PodResourcesClient
from plugin.probes import serve_probes
from plugin.settings import Settings, has_label_entries, load_settings
from plugin.signing import Keyring, SigningKeyError, load_keyring
from plugin.wiring import build_agent
from vcuda.model import GpuUuid
from vcuda.names import Names
from vcuda.signing import Verifier

if TYPE_CHECKING:
    from plugin.dra.claims import ClaimSource
    from plugin.slicepublisher import SlicePublisher
    from plugin.watchdog import PodEvictor

__all__ = ["main", "node_exporter", "tally_health"]

log = logging.getLogger("plugin")
EXIT_MIG_LAYOUT_CHANGED = 4


class _NoGpus:
    """A :class:`GpuSource` with no GPUs, used when NVML fails and ``--fail-on-init-error=false``."""

    def discover(self) -> NodeGpus:
        return NodeGpus((), (), "", "")

    def is_reachable(self, uuid: GpuUuid) -> bool:
        return False

    async def xid_events(self):  # type: ignore[no-untyped-def]  # an empty async generator
        return
        yield


def _read_keys(path: Path) -> Keyring:
    try:
        return load_keyring(path)
    except SigningKeyError as err:
        raise ConfigError(f"invalid setting --assignment-key-file: {err}") from err


def _driver_root(settings: Settings) -> Settings:
    """The settings with the driver root the GPU Operator's toolkit would pick (plugin.nvml_loader)."""
    root = locate_driver_root(settings.nvidia_driver_root, settings.driver_host_root)
    if root.path != settings.nvidia_driver_root:
        log.info("using the GPU Operator's driver root %s (host %s)", root.path, root.host_path)
    return settings.model_copy(
        update={"nvidia_driver_root": root.path, "nvidia_driver_host_root": root.host_path}
    )


def _gpu_source(settings: Settings) -> GpuSource:
    from plugin.nvml import Nvml, NvmlError  # the only pynvml importer, loaded only here

    search = find_library(settings.nvidia_driver_root, NVML_LIBRARY)
    nvml = Nvml(library_path=search.found)
    try:
        nvml.open()
        log.info("NVML loaded from %s", search.found or "the dynamic loader's path")
        return nvml
    except NvmlError as err:
        where = f"{search.found}" if search.found else f"{search.describe()}, then the dynamic loader's path"
        message = f"{err} (libnvidia-ml.so.1 looked for at: {where}; set --nvidia-driver-root)"
        if settings.fail_on_init_error:
            log.error("NVML failed to initialise: %s", message)
            raise SystemExit(3) from err
        log.warning("NVML failed to initialise (%s); running without GPUs", message)
        return _NoGpus()


async def _partition_mig(
    settings: Settings, source: GpuSource, names: Names, pod_resources: ListPodResources
) -> None:
    """MIG partitioning (ENABLE_MIG, docs/mig.md) before discovery feeds the agent; MigConfigError stops."""
    from plugin.mig_partition import partition_at_start
    from plugin.nvml import Nvml

    if settings.enable_mig and isinstance(source, Nvml):
        wanted = PartitionSettings(
            True, settings.mig_profile, settings.mig_instance_count, settings.skip_configured
        )
        await partition_at_start(source, wanted, pod_resources, names)


def tally_health(tally: XidTally) -> Callable[[Mapping[GpuUuid, bool]], None]:
    """``build_agent(on_health=...)``: the health advertised to the kubelet, for ``kube_vgpu_gpu_healthy``."""

    def update(healthy: Mapping[GpuUuid, bool]) -> None:
        for uuid, ok in healthy.items():
            tally.set_healthy(uuid, ok)

    return update


@contextlib.contextmanager
def node_exporter(
    settings: Settings,
    source: GpuSource,
    gpus: Sequence[Gpu],
    tally: XidTally,
    pod_resources: PodResourcesSource | None,
    violations: ViolationTally | None = None,
    shared_claims: Callable[[], Mapping[str, Collection[str]]] | None = None,
) -> Iterator[int]:
    """The Prometheus node exporter (docs/metrics.md) on ``--metrics-port`` while the block runs; yields
    the port (0: disabled). The agent feeds ``tally`` (``on_xid=tally.record``, ``tally_health``);
    ``pod_resources`` is the agent's PodResources client seen from the scrape thread (a
    :class:`PodResourcesCache`; None: every container with a state directory is reported)."""
    if settings.metrics_port == 0:
        yield 0
        return
    from plugin.metrics.nvml_telemetry import NvmlTelemetry
    from plugin.nvml import Nvml

    collector = NodeCollector(
        node=settings.node_name,
        state_dir=settings.state_dir,
        telemetry=NvmlTelemetry(source, gpus=gpus) if isinstance(source, Nvml) else None,
        pod_resources=pod_resources,
        health=tally,
        violations=violations,  # the watchdog's counter (plugin.watchdog)
        shared_claims=shared_claims,  # the DRA claims each pod uses, as the watchdog last listed them
    )
    server, _ = serve(settings.metrics_port, with_build_info("plugin", collector))
    log.info("serving node metrics on :%d/metrics", settings.metrics_port)
    try:
        yield settings.metrics_port
    finally:
        server.shutdown()
        server.server_close()


def _evictor(settings: Settings, api: ApiClient) -> "PodEvictor | None":
    """The Eviction API client for ``--watchdog-evict`` (plugin.watchdog imports NVML: loaded only then)."""
    if not settings.watchdog_evict:
        return None
    from plugin.watchdog import ApiEvictor

    return ApiEvictor(api)


def _claims(settings: Settings, api: ApiClient) -> "ClaimSource | None":
    """The ResourceClaim reader of the DRA driver, on ``--front-end=dra`` nodes only."""
    if settings.front_end is not FrontEnd.DRA:
        return None
    from plugin.dra.claims import ApiClaims

    return ApiClaims(api)


def _slices(settings: Settings, api: ApiClient) -> "SlicePublisher | None":
    """The ResourceSlice publisher of the DRA driver, on ``--front-end=dra`` nodes only."""
    if settings.front_end is not FrontEnd.DRA:
        return None
    from plugin.core.dra import driver_name
    from plugin.slicepublisher import SlicePublisher

    return SlicePublisher(api, driver=driver_name(settings.resource_domain), node=settings.node_name)


def _probes(settings: Settings, agent: Agent) -> contextlib.AbstractAsyncContextManager[object]:
    """``/healthz`` and ``/readyz`` on ``--health-port`` (plugin.probes); ready once registered."""
    if settings.health_port == 0:
        return contextlib.nullcontext()
    log.info("serving /healthz and /readyz on :%d", settings.health_port)
    return serve_probes(settings.health_port, agent.ready)


async def _run(settings: Settings, keys: Verifier | None) -> None:
    api = new_api_client()
    cluster = ApiCluster(api)
    names = Names(settings.resource_domain)
    if settings.uninstall:
        await NodePublisher(
            cluster, settings.node_name, names, gfd_coexistence=settings.gfd_coexistence
        ).uninstall()
        await quit_recorded_mps(settings.state_dir, settings.mps_control, settings.mps_dir)
        return
    pod_resources = PodResourcesClient(settings.pod_resources_socket)  # every reader asks this one
    settings = _driver_root(settings)
    source = _gpu_source(settings)
    await _partition_mig(settings, source, names, pod_resources.list)
    tally = XidTally()
    assert keys is not None, "main() reads the keys unless uninstalling"
    agent = build_agent(
        settings,
        source=source,
        cluster=cluster,
        pod_resources=pod_resources.list,
        verifier=keys,
        on_xid=tally.record,
        on_health=tally_health(tally),
        evictor=_evictor(settings, api),
        claims=_claims(settings, api),
        slices=_slices(settings, api),
    )
    shared = agent.watchdog.shared_claims if agent.watchdog is not None else None
    scraped = PodResourcesCache(pod_resources.list, asyncio.get_running_loop())  # asked on this loop
    try:
        with node_exporter(settings, source, agent.node_gpus.gpus, tally, scraped, agent.violations, shared):
            async with _probes(settings, agent):
                await agent.run()
    finally:
        await pod_resources.close()


def _labelled(settings: Settings, argv: Sequence[str] | None) -> Settings:
    """Settings again with the Node's labels when ``nodeConfig`` entries match by labels (node pools)."""
    if not has_label_entries(settings.config_file):
        return settings
    try:
        node = json.loads(CoreV1(new_api_client()).read_node(settings.node_name, _request_timeout=30).data)
    except Exception as err:  # the client raises ApiException, urllib3 and config errors alike
        raise ConfigError(f"nodeConfig matchLabels: cannot read node {settings.node_name}: {err}") from err
    labels = (node.get("metadata") or {}).get("labels")
    return load_settings(argv, node_labels=labels or {})


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = _labelled(load_settings(argv), argv)
        keys = None if settings.uninstall else _read_keys(settings.assignment_key_file)
    except ConfigError as err:
        print(f"kube-vgpu-plugin: {err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_run(settings, keys))
    except KeyboardInterrupt:
        return 0
    except ConfigError as err:  # found after discovery: an invalid MIG_PROFILE, mixed profiles under single
        print(f"kube-vgpu-plugin: {err}", file=sys.stderr)
        return 2
    except MigLayoutChangedError as err:
        print(f"kube-vgpu-plugin: MIG layout changed, exiting to start again on it: {err}", file=sys.stderr)
        return EXIT_MIG_LAYOUT_CHANGED
    return 0


if __name__ == "__main__":
    sys.exit(main())
