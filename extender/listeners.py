"""The extender's three listeners and their TLS: who can reach which verb.

- **scheduling** (``--host``/``--port``): filter, prioritize, bind, preempt, nothing else. Plain HTTP only on
  a loopback address (the sidecar of a second kube-scheduler, which alone shares the pod's network namespace);
  on any other address it must be HTTPS with client-certificate verification (``--scheduler-client-ca-file``:
  kube-scheduler's extender ``tlsConfig`` ``certFile``/``keyFile``), or the extender refuses to start.
- **webhook** (``--webhook-port``): HTTPS, the admission paths only.
- **metrics** (``--metrics-host``/``--metrics-port``): ``/metrics``, ``/healthz``, ``/readyz``, read-only.

Certificates are read into one :class:`ssl.SSLContext` per listener, and :class:`ReloadingTls` loads them
again into that same context when their files change (a Secret update, a cert-manager renewal), so new
connections get the new certificate without a restart. A renewal that cannot be read keeps the old
certificate and is logged. A new client CA is added to the trusted ones (old and new both verify, which is
what a CA rotation needs); dropping a CA takes a restart.
"""

import asyncio
import ipaddress
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import uvicorn

from extender.app import Deps, create_app, create_metrics_app, create_webhook_app
from extender.settings import Settings, SettingsError

__all__ = ["RELOAD_EVERY_S", "Listener", "ReloadingTls", "is_loopback", "listeners", "watch_certificates"]

log = logging.getLogger(__name__)
RELOAD_EVERY_S: Final = 10.0
"""How often certificate files are looked at: a kubelet refreshes a mounted Secret within about a minute, and
a ``stat`` of three files is nothing."""
_Stamp = tuple[int, int, int] | None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this network namespace only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stamp(path: Path) -> _Stamp:
    """Identity of a file's current content; follows symlinks, so a Secret's ``..data`` swap counts."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class ReloadingTls:
    """A server :class:`ssl.SSLContext` whose certificate (and client CA) follow their files."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
        self._stamps = self._current()
        try:
            self._load()
        except (OSError, ssl.SSLError) as err:
            raise SettingsError(f"TLS files {cert}, {key}: {err}") from err

    def _files(self) -> tuple[Path, ...]:
        return (self.cert, self.key) if self.client_ca is None else (self.cert, self.key, self.client_ca)

    def _current(self) -> tuple[_Stamp, ...]:
        return tuple(_stamp(p) for p in self._files())

    def _load(self) -> None:
        # Check the pair on a scratch context first: a half-written renewal must not reach the live one.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert, self.key)
        self.context.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            self.context.load_verify_locations(cafile=self.client_ca)

    def reload_if_changed(self) -> bool:
        """Load the files again when they changed since the last look; True when the new ones are in use."""
        stamps = self._current()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            self._load()
        except (OSError, ssl.SSLError) as err:
            log.warning("keeping the old certificate", extra={"cert": str(self.cert), "error": str(err)})
            return False
        log.info("certificate reloaded", extra={"cert": str(self.cert)})
        return True


@dataclass(frozen=True, slots=True)
class Listener:
    """One uvicorn server: its name, its config and the TLS it reloads (if any)."""

    name: str
    config: uvicorn.Config
    tls: ReloadingTls | None


def _config(app: Any, host: str, port: int, settings: Settings, tls: ReloadingTls | None) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=75,  # kube-scheduler keeps its extender connections alive between cycles
    )
    config.load()
    if tls is not None:
        config.ssl = tls.context  # uvicorn serves the context it holds: ours, which the reloader updates
    return config


def _scheduling_tls(settings: Settings) -> ReloadingTls | None:
    files = (settings.scheduler_tls_cert_file, settings.scheduler_tls_key_file)
    ca = settings.scheduler_client_ca_file
    if files == (None, None) and ca is None:
        if not is_loopback(settings.host):
            raise SettingsError(
                f"the scheduling verbs listen on {settings.host}, which is not loopback: give "
                "--scheduler-tls-cert-file, --scheduler-tls-key-file and --scheduler-client-ca-file "
                "(kube-scheduler's extender tlsConfig), or listen on 127.0.0.1 as a sidecar"
            )
        return None
    if None in files or ca is None:
        raise SettingsError(
            "HTTPS for the scheduling verbs needs all of --scheduler-tls-cert-file, "
            "--scheduler-tls-key-file and --scheduler-client-ca-file"
        )
    assert files[0] is not None
    assert files[1] is not None
    return ReloadingTls(files[0], files[1], ca)


def listeners(settings: Settings, deps: Deps) -> list[Listener]:
    """The configured listeners, each with its own app; refuses an unsafe combination of settings."""
    tls = _scheduling_tls(settings)
    out = [
        Listener("scheduling", _config(create_app(deps), settings.host, settings.port, settings, tls), tls)
    ]
    if settings.metrics_port is not None:
        app = create_metrics_app(deps)
        out.append(
            Listener(
                "metrics", _config(app, settings.metrics_host, settings.metrics_port, settings, None), None
            )
        )
    if settings.webhook_port is not None:
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            raise SettingsError("the webhook needs --tls-cert-file and --tls-key-file")
        hook = ReloadingTls(settings.tls_cert_file, settings.tls_key_file)
        app = create_webhook_app(deps)
        out.append(
            Listener(
                "webhook", _config(app, settings.webhook_host, settings.webhook_port, settings, hook), hook
            )
        )
    ports = [(item.config.host, item.config.port) for item in out]
    if len({port for _, port in ports}) != len(ports):
        raise SettingsError(f"the listeners need distinct ports: {ports}")
    return out


async def watch_certificates(tls: Sequence[ReloadingTls], every_s: float = RELOAD_EVERY_S) -> None:
    """Reload each context whose files changed, every ``every_s`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(every_s)
        for item in tls:
            item.reload_if_changed()
