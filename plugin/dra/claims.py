"""Reading ResourceClaims from the API server (``resource.k8s.io/v1``), as the DRA kubelet plugin helper does.

The kubelet sends only a claim's namespace, name and UID; the allocation is in the claim's status. One GET
per claim, in a worker thread, with a bounded timeout; failures leave as :class:`plugin.kube.KubeError`.
"""

import asyncio
import json
from typing import Any, Protocol

from kubernetes import client

from plugin.core.dra import ClaimRef
from plugin.kube import KubeError
from plugin.kubeapi import ResourceV1

__all__ = ["ApiClaims", "ClaimSource"]


class ClaimSource(Protocol):
    async def read(self, ref: ClaimRef) -> Any:
        """The claim's JSON body; raises :class:`KubeError`."""
        ...


class ApiClaims:
    """:class:`ClaimSource` over the real client (plugin.kubeapi.ResourceV1)."""

    def __init__(self, api: client.ApiClient, *, timeout_s: float = 10.0) -> None:
        self._resource = ResourceV1(api)
        self._timeout_s = timeout_s

    async def read(self, ref: ClaimRef) -> Any:
        try:
            response = await asyncio.to_thread(
                self._resource.read_namespaced_resource_claim,
                ref.name,
                ref.namespace,
                _request_timeout=self._timeout_s,
            )
            return json.loads(response.data)
        except Exception as err:  # the client raises ApiException, urllib3 and socket errors alike
            raise KubeError(f"cannot read ResourceClaim {ref}: {_reason(err)}") from err


def _reason(err: Exception) -> str:
    status = getattr(err, "status", None)
    return f"HTTP {status} {getattr(err, 'reason', '')}".strip() if status else str(err)
