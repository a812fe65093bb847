"""Wire models: kube-scheduler's extender types (``k8s.io/kube-scheduler/extender/v1``) and AdmissionReview
v1.

The Go types have no json tags, so every key is the Go field name in PascalCase and nil pointers, slices and
maps travel as ``null`` (docs/extender.md, "Wire"; Go samples in tests/contract/golden/extender/). Pods and
Nodes stay raw JSON dictionaries: the extender reads a few fields from them and must not reject anything else
a newer API server sends. Scores are JSON integers.
No decisions here; ``app.py`` validates requests with these models and encodes answers with them.
"""

from collections.abc import Mapping
from itertools import repeat
from json.encoder import encode_basestring_ascii
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.alias_generators import to_pascal

__all__ = [
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "AdmissionRequest",
    "AdmissionResponse",
    "AdmissionReview",
    "AdmissionStatus",
    "ExtenderArgs",
    "ExtenderBindingArgs",
    "ExtenderBindingResult",
    "ExtenderFilterResult",
    "ExtenderPreemptionArgs",
    "ExtenderPreemptionResult",
    "HostPriority",
    "HostPriorityList",
    "MetaPod",
    "MetaVictims",
    "NodeList",
    "Victims",
    "encode_host_priorities",
]

MIN_PRIORITY: Final = 0
MAX_PRIORITY: Final = 10

RawObject = dict[str, Any]


class _Go(BaseModel):
    """PascalCase keys on the wire, snake_case in Python; unknown keys ignored (Go ignores them too)."""

    model_config = ConfigDict(alias_generator=to_pascal, populate_by_name=True, frozen=True, extra="ignore")


class NodeList(BaseModel):
    """``v1.NodeList``: ordinary Kubernetes JSON (camelCase)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    metadata: RawObject = Field(default_factory=dict)
    items: list[RawObject] = Field(default_factory=list)


class ExtenderArgs(_Go):
    """The filter and prioritize request: ``Nodes`` iff ``nodeCacheCapable: false``, else ``NodeNames``."""

    pod: RawObject
    nodes: NodeList | None = None
    node_names: list[str] | None = None


class ExtenderFilterResult(_Go):
    nodes: NodeList | None = None
    node_names: list[str] | None = None
    failed_nodes: dict[str, str] | None = None
    failed_and_unresolvable_nodes: dict[str, str] | None = None
    error: str = ""


class HostPriority(_Go):
    host: str
    score: int


class HostPriorityList(RootModel[list[HostPriority]]):
    """A bare JSON array of :class:`HostPriority`."""


_SCORE_TAILS: Final = {score: f',"Score":{score:d}}}' for score in range(MIN_PRIORITY, MAX_PRIORITY + 1)}
_tail = _SCORE_TAILS.__getitem__
_quoted = encode_basestring_ascii
_ITEM_HEADS: Final = repeat('{"Host":')


def encode_host_priorities(scores: Mapping[str, int]) -> str:
    """``HostPriorityList`` JSON, the same document ``HostPriorityList(...).model_dump_json(by_alias=True)``
    gives (non-ASCII escaped), several times faster for thousands of nodes (the prioritize hot path): the
    items are joined by C-level iterators, with a precomputed tail per score 0..10."""
    tails = map(_tail, scores.values())
    try:
        items = list(map("".join, zip(_ITEM_HEADS, map(_quoted, scores), tails, strict=False)))
    except KeyError:  # a score outside 0..10: format each item
        items = [f'{{"Host":{_quoted(h)},"Score":{s:d}}}' for h, s in scores.items()]
    return "[" + ",".join(items) + "]"


class ExtenderBindingArgs(_Go):
    pod_name: str
    pod_namespace: str
    pod_uid: str = Field(alias="PodUID")
    node: str


class ExtenderBindingResult(_Go):
    error: str = ""


class MetaPod(_Go):
    uid: str = Field(alias="UID")


class MetaVictims(_Go):
    pods: list[MetaPod] | None = None
    num_pdb_violations: int = Field(default=0, alias="NumPDBViolations")


class Victims(_Go):
    pods: list[RawObject] | None = None
    num_pdb_violations: int = Field(default=0, alias="NumPDBViolations")


class ExtenderPreemptionArgs(_Go):
    """``NodeNameToMetaVictims`` iff ``nodeCacheCapable``, else ``NodeNameToVictims`` with full pods."""

    pod: RawObject
    node_name_to_victims: dict[str, Victims] | None = None
    node_name_to_meta_victims: dict[str, MetaVictims] | None = None


class ExtenderPreemptionResult(_Go):
    node_name_to_meta_victims: dict[str, MetaVictims] | None = None


# --- admission.k8s.io/v1 (ordinary Kubernetes camelCase JSON) ------------------------------------


class _Camel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class AdmissionRequest(_Camel):
    uid: str
    object: RawObject | None = None
    operation: str = ""
    namespace: str = ""


class AdmissionReview(_Camel):
    apiVersion: str = "admission.k8s.io/v1"  # noqa: N815 - the Kubernetes field name
    kind: str = "AdmissionReview"
    request: AdmissionRequest | None = None


class AdmissionStatus(_Camel):
    code: int
    message: str
    reason: str = ""


class AdmissionResponse(_Camel):
    uid: str
    allowed: bool
    status: AdmissionStatus | None = None
    patchType: str | None = None  # noqa: N815 - the Kubernetes field name
    patch: str | None = None
