"""Which node labels and annotations the plugin owns, and the patch that keeps only those in step.

The plugin lives beside the GPU Operator (``nvidia.com/gpu.deploy.*``), GPU feature discovery (GFD:
``nvidia.com/gpu.family``, ``gpu.product``, ``cuda.*``, ``mig.*``) and the MIG manager
(``nvidia.com/mig.config``, ``mig.config.state``), which write names under the same prefixes. So ownership
is recorded, never guessed from a prefix: the Node carries ``<domain>/vgpu-managed``, versioned JSON listing
the labels and annotations the plugin wrote, and only names on that list are ever removed. A name someone
else wrote stays untouched.

With GFD coexistence on, the plugin writes none of GFD's names (:func:`is_gfd_name`) and leaves them to GFD.
Pure: dicts in, a merge-patch dict out; imports only the standard library and :mod:`vcuda`.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from vcuda.names import Names

__all__ = [
    "GFD_PREFIXES",
    "RECORD_VERSION",
    "Managed",
    "decode_managed",
    "encode_managed",
    "is_gfd_name",
    "managed_key",
    "meta_patch",
    "uninstall_patch",
    "without_gfd_names",
]

RECORD_VERSION: Final = 1
# The label families NVIDIA's GPU feature discovery writes (gpu-feature-discovery internal/lm): GPU facts,
# CUDA versions, MIG facts and its own timestamp. gpu.deploy.* (the operator) and mig.config* (the MIG
# manager) are not GFD's but are never written by the plugin either.
GFD_PREFIXES: Final = (
    "nvidia.com/gpu.",
    "nvidia.com/cuda.",
    "nvidia.com/mig.",
    "nvidia.com/mig-",
    "nvidia.com/gfd.",
)


@dataclass(frozen=True, slots=True)
class Managed:
    """The names the plugin wrote on its Node (the record in ``<domain>/vgpu-managed``)."""

    labels: frozenset[str] = frozenset()
    annotations: frozenset[str] = frozenset()


def managed_key(names: Names) -> str:
    """The annotation holding the record, e.g. ``nvidia.com/vgpu-managed``."""
    return f"{names.domain}/vgpu-managed"


def is_gfd_name(key: str) -> bool:
    """Whether GFD writes (or may write) label ``key``."""
    return key.startswith(GFD_PREFIXES)


def without_gfd_names(labels: Mapping[str, str]) -> dict[str, str]:
    """``labels`` less every name GFD writes (GFD coexistence)."""
    return {k: v for k, v in labels.items() if not is_gfd_name(k)}


def encode_managed(managed: Managed) -> str:
    body = {"v": RECORD_VERSION, "labels": sorted(managed.labels), "annotations": sorted(managed.annotations)}
    return json.dumps(body, separators=(",", ":"))


def decode_managed(text: str | None) -> Managed:
    """The record; absent -> empty. Raises ``ValueError`` for a record this version cannot read."""
    if text is None:
        return Managed()
    try:
        body: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err}") from err
    if not isinstance(body, dict) or body.get("v") != RECORD_VERSION:
        raise ValueError(f"unsupported record (want {{'v': {RECORD_VERSION}, ...}})")
    return Managed(_names(body, "labels"), _names(body, "annotations"))


def _names(body: Mapping[str, Any], field: str) -> frozenset[str]:
    value = body.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{field!r} must be a list of strings")
    return frozenset(value)


def meta_patch(
    meta: Mapping[str, Any],
    *,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    previous: Managed,
    key: str,
) -> dict[str, Any]:
    """The metadata merge patch that sets ``labels``/``annotations`` and removes names the plugin wrote
    before (``previous``) and no longer wants; empty when the Node is already right."""
    have_labels = meta.get("labels") or {}
    have_annotations = meta.get("annotations") or {}
    now = Managed(frozenset(labels), frozenset(annotations) | {key})
    record = encode_managed(now)
    label_patch = _changes(have_labels, labels, previous.labels)
    annotation_patch = _changes(have_annotations, {**annotations, key: record}, previous.annotations - {key})
    patch: dict[str, Any] = {}
    if label_patch:
        patch["labels"] = label_patch
    if annotation_patch:
        patch["annotations"] = annotation_patch
    return patch


def _changes(
    have: Mapping[str, str], want: Mapping[str, str], owned: frozenset[str]
) -> dict[str, str | None]:
    changed: dict[str, str | None] = {k: v for k, v in want.items() if have.get(k) != v}
    changed |= {k: None for k in sorted(owned) if k in have and k not in want}
    return changed


def uninstall_patch(meta: Mapping[str, Any], previous: Managed, key: str) -> dict[str, Any]:
    """Removes exactly the recorded names and the record itself."""
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return {
        "labels": {k: None for k in sorted(previous.labels) if k in labels},
        "annotations": {k: None for k in sorted(previous.annotations | {key}) if k in annotations},
    }
