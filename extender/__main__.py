"""``kube-vgpu-extender``: the composition root. Reads settings, wires the state, watches, scheduler, metrics
and HTTP app together, and serves the extender (HTTP) and, when configured, the admission webhook (HTTPS)
from one process and one app.
"""

import asyncio
import contextlib
import dataclasses
import gc
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import uvicorn

from extender.app import Deps
from extender.clusterstate import ClusterState
from extender.kube import KubeCluster, Watcher
from extender.leader import (
    Elector,
    KubeLeases,
    Leadership,
    LeaseTimings,
    default_identity,
    default_namespace,
    relist,
)
from extender.listeners import Listener, listeners, watch_certificates
from extender.metrics import ExtenderMetrics
from extender.scheduling import Scheduler
from extender.settings import Settings, SettingsError, load_settings
from extender.signing import AssignmentKeys, SigningKeyError, load_keys
from kube_vgpu_cli.build import BuildInfo
from kube_vgpu_cli.logs import adopt_loggers, configure_logging
from vcuda.names import Names

__all__ = ["build", "main", "settle_memory"]

log = logging.getLogger("extender")


def _api_client(settings: Settings) -> Any:
    from kubernetes import client, config

    if settings.kubeconfig is not None:
        config.load_kube_config(config_file=str(settings.kubeconfig))  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _key(settings: Settings) -> AssignmentKeys:
    if settings.assignment_key_file is None:
        raise SettingsError("--assignment-key-file is required: assignments must be signed")
    try:
        return load_keys(settings.assignment_key_file, settings.assignment_verify_keys)
    except SigningKeyError as err:
        raise SettingsError(f"assignment keys: {err}") from err


def build(settings: Settings, api_client: Any, key: AssignmentKeys) -> tuple[Deps, Watcher]:
    metrics = ExtenderMetrics()
    metrics.registry.register(BuildInfo("extender"))
    state = ClusterState(
        Names(settings.resource_domain),
        key.keyring,
        grace_s=settings.reservation_grace_s,
        clock=time.monotonic,
        events=metrics,
        gone_hold_s=settings.gone_pod_hold_s,
        gone_hold_max=settings.gone_pod_hold_max,
    )
    metrics.watch(state)
    cluster = KubeCluster(api_client)
    scheduler = Scheduler(
        state,
        cluster,
        signer=key.signer,
        gpu_policy=settings.gpu_policy,
        node_policy=settings.node_policy,
        scheduler_names=[n.strip() for n in settings.scheduler_names.split(",") if n.strip()],
        recorder=metrics,
    )
    deps = Deps(
        scheduler,
        state,
        metrics,
        url_prefix=settings.url_prefix,
        node_cache_capable=settings.node_cache_capable,
        webhook_scheduler_name=settings.webhook_scheduler_name,
        namespaces=cluster if settings.gpu_translation else None,
    )
    return deps, Watcher(api_client, state)


def _leadership(settings: Settings, api_client: Any, state: ClusterState) -> Leadership:
    namespace = settings.leader_elect_resource_namespace or default_namespace()
    leases = KubeLeases(api_client, namespace, settings.leader_elect_resource_name)
    timings = LeaseTimings(
        settings.leader_elect_lease_duration_s,
        settings.leader_elect_renew_deadline_s,
        settings.leader_elect_retry_period_s,
    )
    elector = Elector(leases, settings.leader_elect_identity or default_identity(), timings)
    return Leadership(elector, lambda: relist(api_client, state))


async def _sweep(state: ClusterState, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        state.expire()


async def serve(settings: Settings, deps: Deps, served: Sequence[Listener]) -> None:
    """Serve every listener (:func:`extender.listeners.listeners`) until stopped; certificates follow their
    files and expired reservations are swept meanwhile."""
    chores = [
        asyncio.create_task(_sweep(deps.state, settings.resync_s)),
        asyncio.create_task(watch_certificates([s.tls for s in served if s.tls is not None])),
    ]
    try:
        await asyncio.gather(*(uvicorn.Server(s.config).serve() for s in served))
    finally:
        for chore in chores:
            chore.cancel()
        for chore in chores:
            with contextlib.suppress(asyncio.CancelledError):
                await chore


def settle_memory() -> None:
    """After the first full list: move the long-lived cluster state out of the collector's sight, so that a
    full collection never pauses a filter for tens of milliseconds walking 5,000 nodes' worth of objects."""
    gc.collect()
    gc.freeze()


def _settle_when_synced(state: ClusterState) -> None:
    def wait() -> None:
        if state.synced.wait():
            settle_memory()

    threading.Thread(target=wait, name="settle-memory", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["keygen"]:  # the chart's key Job: makes the signing key pair once (extender/keygen.py)
        from extender.keygen import main as keygen

        return keygen(args[1:])
    try:
        settings = load_settings(args)
        key = _key(settings)
    except SettingsError as err:
        print(f"kube-vgpu-extender: {err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    api_client = _api_client(settings)
    deps, watcher = build(settings, api_client, key)
    leadership = _leadership(settings, api_client, deps.state) if settings.leader_elect else None
    if leadership is not None:
        deps = dataclasses.replace(deps, serving=leadership.serving)
    try:
        served = listeners(settings, deps)
    except SettingsError as err:
        print(f"kube-vgpu-extender: {err}", file=sys.stderr)
        return 2
    adopt_loggers("uvicorn", "uvicorn.error", "uvicorn.access")  # their Config installed text handlers
    watcher.start()
    if leadership is not None:
        leadership.start()
    _settle_when_synced(deps.state)
    log.info("serving", extra={s.name: f"{s.config.host}:{s.config.port}" for s in served})
    try:
        asyncio.run(serve(settings, deps, served))
    finally:
        if leadership is not None:
            leadership.stop()  # releases the Lease: a standby takes over at its next try
        watcher.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
