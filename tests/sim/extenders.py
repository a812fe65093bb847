"""kube-scheduler's HTTP extender client (``pkg/scheduler/extender.go``), part of the SIMULATED scheduler.

``POST <urlPrefix>/<verb>`` with the Go JSON shapes of :mod:`tests.sim.wire`; only HTTP 200 is a success; the
timeout is the configured ``httpTimeout``. The extender under test is the real one.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from tests.sim.schedconfig import ExtenderConfig
from tests.sim.wire import (
    FilterResult,
    HostPriority,
    WireError,
    binding_args,
    decode_binding_result,
    decode_filter_result,
    decode_host_priority_list,
    extender_args,
)

__all__ = ["ExtenderCallError", "ExtenderClient"]


class ExtenderCallError(RuntimeError):
    """Transport error, non-200 status or an undecodable reply: kube-scheduler's error for the verb."""


class ExtenderClient:
    def __init__(self, config: ExtenderConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily, inside the event loop that uses it
            timeout = aiohttp.ClientTimeout(total=self.config.http_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, read_bufsize=1 << 20)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, verb: str, body: bytes) -> bytes:
        url = self.config.url(verb)
        try:
            async with self._http().post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as reply:
                content = await reply.read()
                status = reply.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ExtenderCallError(
                f"{verb} with extender at URL {url}: {type(err).__name__}: {err}"
            ) from err
        if status != 200:
            raise ExtenderCallError(f"failed {verb} with extender at URL {url}, code {status}")
        return content

    async def filter(self, pod: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> FilterResult:
        body = extender_args(pod, nodes, cache_capable=self.config.node_cache_capable)
        data = await self._post(self.config.filter_verb, body)
        try:
            return decode_filter_result(data)
        except WireError as err:
            raise ExtenderCallError(f"filter: {err}") from err

    async def prioritize(
        self, pod: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]
    ) -> list[HostPriority]:
        body = extender_args(pod, nodes, cache_capable=self.config.node_cache_capable)
        data = await self._post(self.config.prioritize_verb, body)
        try:
            return decode_host_priority_list(data)
        except WireError as err:
            raise ExtenderCallError(f"prioritize: {err}") from err

    async def bind(self, *, name: str, namespace: str, uid: str, node: str) -> str:
        """The extender's ``Error`` ("" on success)."""
        data = await self._post(
            self.config.bind_verb, binding_args(name=name, namespace=namespace, uid=uid, node=node)
        )
        try:
            return decode_binding_result(data).error
        except WireError as err:
            raise ExtenderCallError(f"bind: {err}") from err
