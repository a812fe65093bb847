"""Composition root of ``kube-vgpu-plugin``: settings, logging, NVML, the API client, the kubelet, the agent.

The only module that wires adapters together. Exit codes: 0 after ``--uninstall``, 2 for a bad
configuration (the message names the field), 3 when NVML cannot start and ``--fail-on-init-error`` is on,
4 when the GPUs' MIG layout changed while serving (the DaemonSet starts the plugin again on the new layout).
"""

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from kubernetes import client, config

from plugin.agent import Agent
from plugin.core.errors import ConfigError, MigLayoutChangedError
from plugin.core.gpu import Gpu, GpuSource, NodeGpus
from plugin.core.mig_partition import PartitionSettings
from plugin.kube import ApiCluster
from plugin.kubelet import PodResourcesClient
from plugin.metrics.exporter import NodeCollector, serve
from plugin.metrics.podresources import KubeletPodResources
from plugin.metrics.sources import XidTally
from plugin.node import NodePublisher
from plugin.settings import Settings, load_settings
from vcuda.model import GpuUuid
from vcuda.names import Names

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


def _read_key(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as err:
        raise ConfigError(f"invalid setting --assignment-key-file: cannot read {path}: {err}") from err
    if len(key) < 16:
        raise ConfigError(f"invalid setting --assignment-key-file: {path} holds fewer than 16 bytes")
    return key


def _api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _gpu_source(settings: Settings) -> GpuSource:
    from plugin.nvml import Nvml, NvmlError  # the only pynvml importer, loaded only here

    nvml = Nvml()
    try:
        nvml.open()
        return nvml
    except NvmlError as err:
        if settings.fail_on_init_error:
            log.error("NVML failed to initialise: %s", err)
            raise SystemExit(3) from err
        log.warning("NVML failed to initialise (%s); running without GPUs", err)
        return _NoGpus()


async def _partition_mig(settings: Settings, source: GpuSource, names: Names) -> None:
    """MIG partitioning (ENABLE_MIG, docs/mig.md) before discovery feeds the agent; MigConfigError stops."""
    from plugin.mig_partition import partition_at_start
    from plugin.nvml import Nvml

    if settings.enable_mig and isinstance(source, Nvml):
        wanted = PartitionSettings(
            True, settings.mig_profile, settings.mig_instance_count, settings.skip_configured
        )
        await partition_at_start(source, wanted, settings.pod_resources_socket, names)


def tally_health(tally: XidTally) -> Callable[[Mapping[GpuUuid, bool]], None]:
    """``Agent(on_health=...)``: the health advertised to the kubelet, for ``kube_vgpu_gpu_healthy``."""

    def update(healthy: Mapping[GpuUuid, bool]) -> None:
        for uuid, ok in healthy.items():
            tally.set_healthy(uuid, ok)

    return update


@contextlib.contextmanager
def node_exporter(
    settings: Settings, source: GpuSource, gpus: Sequence[Gpu], tally: XidTally
) -> Iterator[int]:
    """The Prometheus node exporter (docs/metrics.md) on ``--metrics-port`` while the block runs; yields
    the port (0: disabled). The agent feeds ``tally`` (``on_xid=tally.record``, ``tally_health``)."""
    if settings.metrics_port == 0:
        yield 0
        return
    from plugin.metrics.nvml_telemetry import NvmlTelemetry
    from plugin.nvml import Nvml

    pod_resources = KubeletPodResources(str(settings.pod_resources_socket))
    collector = NodeCollector(
        node=settings.node_name,
        state_dir=settings.state_dir,
        telemetry=NvmlTelemetry(source, gpus=gpus) if isinstance(source, Nvml) else None,
        pod_resources=pod_resources,
        health=tally,
    )
    server, _ = serve(settings.metrics_port, collector)
    log.info("serving node metrics on :%d/metrics", settings.metrics_port)
    try:
        yield settings.metrics_port
    finally:
        server.shutdown()
        server.server_close()
        pod_resources.close()


async def _run(settings: Settings, key: bytes) -> None:
    cluster = ApiCluster(_api_client())
    names = Names(settings.resource_domain)
    if settings.uninstall:
        await NodePublisher(cluster, settings.node_name, names).uninstall()
        return
    pod_resources = PodResourcesClient(settings.pod_resources_socket, names.core)
    source = _gpu_source(settings)
    await _partition_mig(settings, source, names)
    tally = XidTally()
    agent = Agent(
        settings,
        source=source,
        cluster=cluster,
        pod_resources=pod_resources.held,
        key=key,
        on_xid=tally.record,
        on_health=tally_health(tally),
    )
    try:
        with node_exporter(settings, source, agent.node_gpus.gpus, tally):
            await agent.run()
    finally:
        await pod_resources.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
        key = b"" if settings.uninstall else _read_key(settings.assignment_key_file)
    except ConfigError as err:
        print(f"kube-vgpu-plugin: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(_run(settings, key))
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
