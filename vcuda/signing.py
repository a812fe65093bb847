"""What a signed assignment is bound to, and the two roles that sign and verify it. Standard library only.

An assignment is only good for the pod it was made for: the signature covers the pod's UID, namespace and
name and a digest of the pod's GPU request (:func:`pod_binding`), so a copy on another pod, or on a pod whose
request changed after the extender decided, is refused. The cryptography lives in adapters
(``extender.signing`` signs and verifies with Ed25519, ``plugin.signing`` only verifies, holding public keys);
this module fixes the bytes they sign and the key IDs they name keys by.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from vcuda.names import Names

__all__ = ["KEY_ID_PREFIX", "PodBinding", "Signer", "Verifier", "key_id", "pod_binding", "request_digest"]

KEY_ID_PREFIX: Final = "ed25519-"


class Signer(Protocol):
    """Signs with one private key; ``key_id`` names its public half (:func:`key_id`)."""

    @property
    def key_id(self) -> str: ...

    def sign(self, payload: bytes) -> bytes: ...


class Verifier(Protocol):
    """True when ``signature`` over ``payload`` verifies with the public key named ``key_id``; False for an
    unknown key ID or a bad signature (never raises for either)."""

    def verify(self, key_id: str, payload: bytes, signature: bytes) -> bool: ...


def key_id(public_key: bytes) -> str:
    """The ID of a raw 32-byte Ed25519 public key: stable, derived, never configured by hand."""
    return KEY_ID_PREFIX + hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PodBinding:
    """The pod an assignment is signed for. ``request`` is :func:`request_digest` of the pod."""

    uid: str
    namespace: str
    name: str
    request: str

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name} (uid {self.uid or '-'})"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _listed(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _container_entry(kind: str, container: Mapping[str, Any], keys: tuple[str, ...]) -> list[Any] | None:
    resources = _mapping(container.get("resources"))
    found = {
        f"{part}/{key}": values[key]
        for part in ("requests", "limits")
        if (values := _mapping(resources.get(part)))
        for key in keys
        if key in values
    }
    return [kind, container.get("name"), found] if found else None


def request_digest(pod: Mapping[str, Any], names: Names) -> str:
    """SHA-256 over every input of the pod's GPU request as the API server holds it: the ``vcuda`` resources
    of each (init) container and the user-facing kube-vgpu annotations (limit, model and UUID selectors,
    policies). Raw values, so no parser version can make two sides disagree."""
    spec, meta = _mapping(pod.get("spec")), _mapping(pod.get("metadata"))
    keys = (names.core, names.memory)
    containers = [
        entry
        for kind in ("initContainers", "containers")
        for c in _listed(spec.get(kind))
        if isinstance(c, Mapping) and (entry := _container_entry(kind, c, keys)) is not None
    ]
    annotations = _mapping(meta.get("annotations"))
    user = (
        names.core_limit,
        names.include_models,
        names.exclude_models,
        names.include_uuids,
        names.exclude_uuids,
        names.gpu_policy,
        names.node_policy,
    )
    chosen = {k: annotations[k] for k in user if k in annotations}
    text = json.dumps({"containers": containers, "annotations": chosen}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def pod_binding(pod: Mapping[str, Any], names: Names) -> PodBinding:
    """The binding of a pod's Kubernetes JSON (missing fields read as empty strings)."""
    meta = _mapping(pod.get("metadata"))
    return PodBinding(
        uid=str(meta.get("uid") or ""),
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        request=request_digest(pod, names),
    )
