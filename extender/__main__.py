"""``kube-vgpu-extender``: the composition root. Reads settings, wires the state, watches, scheduler, metrics
and HTTP app together, and serves the extender (HTTP) and, when configured, the admission webhook (HTTPS)
from one process and one app.
"""

import asyncio
import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import uvicorn

from extender.app import Deps, create_app
from extender.kube import KubeCluster, Watcher
from extender.metrics import ExtenderMetrics
from extender.scheduling import Scheduler
from extender.settings import Settings, SettingsError, load_settings
from extender.state import ClusterState
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


def _key(settings: Settings) -> bytes:
    if settings.assignment_key_file is None:
        raise SettingsError("--assignment-key-file is required: assignments must be signed")
    try:
        key = settings.assignment_key_file.read_bytes().strip()
    except OSError as err:
        raise SettingsError(f"assignment key file: {err}") from err
    if len(key) < 16:
        raise SettingsError("assignment key must have at least 16 bytes")
    return key


def build(settings: Settings, api_client: Any, key: bytes) -> tuple[Deps, Watcher]:
    metrics = ExtenderMetrics()
    state = ClusterState(
        Names(settings.resource_domain),
        key,
        grace_s=settings.reservation_grace_s,
        clock=time.monotonic,
        events=metrics,
    )
    metrics.watch(state)
    scheduler = Scheduler(
        state,
        KubeCluster(api_client),
        key=key,
        gpu_policy=settings.gpu_policy,
        node_policy=settings.node_policy,
        recorder=metrics,
    )
    deps = Deps(
        scheduler,
        state,
        metrics,
        url_prefix=settings.url_prefix,
        node_cache_capable=settings.node_cache_capable,
        webhook_scheduler_name=settings.webhook_scheduler_name,
    )
    return deps, Watcher(api_client, state)


async def _sweep(state: ClusterState, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        state.expire()


async def serve(settings: Settings, deps: Deps) -> None:
    app = create_app(deps)
    configs = [
        uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False
        )
    ]
    if settings.webhook_port is not None:
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            raise SettingsError("the webhook needs --tls-cert-file and --tls-key-file")
        configs.append(
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.webhook_port,
                access_log=False,
                log_level=settings.log_level,
                ssl_certfile=str(settings.tls_cert_file),
                ssl_keyfile=str(settings.tls_key_file),
            )
        )
    sweeper = asyncio.create_task(_sweep(deps.state, settings.resync_s))
    try:
        await asyncio.gather(*(uvicorn.Server(c).serve() for c in configs))
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


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
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
        key = _key(settings)
    except SettingsError as err:
        print(f"kube-vgpu-extender: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    deps, watcher = build(settings, _api_client(settings), key)
    watcher.start()
    _settle_when_synced(deps.state)
    log.info("serving", extra={"port": settings.port, "webhook_port": settings.webhook_port})
    try:
        asyncio.run(serve(settings, deps))
    finally:
        watcher.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
