"""HTTP: three apps for three listeners, each serving nothing but its own paths. Translation only.

- :func:`create_app`: kube-scheduler's verbs (filter, prioritize, bind, preempt), under ``url_prefix``
  (``/scheduler`` by default, the chart's ``urlPrefix``) and at the root; nothing else.
- :func:`create_webhook_app`: the admission webhook (``/validate``, ``/mutate``); nothing else.
- :func:`create_metrics_app`: ``/metrics``, ``/healthz``, ``/readyz``; nothing else.

Every verb reads the raw body (at most a bounded size), validates it with the wire models (a malformed body is
a 400 with a message, never a 500), hands plain values to the scheduler and encodes its answer in the Go
shapes. The filter always answers in the mode of the request (``NodeNames`` or full ``Nodes``), even when no
node passes. Node objects in a request are never read for their inventory: the extender keeps its own (the
watch), so a request only names candidates.
"""

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from extender.api import (
    AdmissionRequest,
    AdmissionResponse,
    AdmissionReview,
    AdmissionStatus,
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderBindingResult,
    ExtenderPreemptionArgs,
    ExtenderPreemptionResult,
    MetaPod,
    MetaVictims,
    NodeList,
    encode_host_priorities,
)
from extender.clusterstate import ClusterState
from extender.kube import ClusterError, Namespaces
from extender.metrics import ExtenderMetrics
from extender.scheduling import FilterOutcome, Scheduler
from extender.webhook import asks_nvidia_gpu, mutate, validate
from vcuda.names import NVIDIA_GPU_RESOURCE, TRANSLATION_ENABLED

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_REVIEW_BYTES",
    "NAMESPACE_READS_AT_ONCE",
    "REVIEWS_AT_ONCE",
    "REVIEW_DEADLINE_S",
    "Deps",
    "create_app",
    "create_metrics_app",
    "create_webhook_app",
]

M = TypeVar("M", bound=BaseModel)
_JSON = "application/json"
_ARGS_KEYS = frozenset({"Pod", "Nodes", "NodeNames"})
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-style escape: the wire models' parser and ``json`` differ on lone surrogates."""
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
"""Larger scheduling bodies are refused unread: a full-``Nodes`` filter for 5,000 nodes is a few tens of MB;
a ``NodeNames`` one about 100 KB. Only kube-scheduler reaches these (loopback or client certificates)."""
MAX_REVIEW_BYTES: Final = 8 * 1024 * 1024
"""Larger AdmissionReviews are refused unread. The API server sends at most its 3 MiB request limit as the
object (twice on UPDATE); the webhook port is open to every pod, so this is what any client can make the
extender hold per review."""
REVIEWS_AT_ONCE: Final = 4
"""Review bodies read and parsed at the same time; others wait up to :data:`REVIEW_WAIT_S`, then get a 503.
With :data:`MAX_REVIEW_BYTES` it bounds what the webhook can hold (tens of MB, in a 512 MiB container)
whatever number of clients connect; admissions take milliseconds, so honest calls rarely wait."""
REVIEW_WAIT_S: Final = 1.0
NAMESPACE_READS_AT_ONCE: Final = 2
"""Namespace reads of the translating webhook in flight at once (each holds a worker thread); others wait up
to :data:`REVIEW_WAIT_S`, then the pod is denied as retryable."""
REVIEW_DEADLINE_S: Final = 10.0
"""A review body must arrive within this (the API server's default webhook timeout): a client trickling
bytes does not keep a slot."""


@dataclass(frozen=True, slots=True)
class Deps:
    """Everything the HTTP layer needs, built by ``__main__`` (or a test)."""

    scheduler: Scheduler
    state: ClusterState
    metrics: ExtenderMetrics
    url_prefix: str = "/scheduler"
    node_cache_capable: bool = True
    webhook_scheduler_name: str | None = None
    serving: Callable[[], bool] = lambda: True
    """Whether this replica answers the verbs: always, unless it is a standby (:mod:`extender.leader`)."""
    namespaces: Namespaces | None = None
    """Where the mutating webhook reads a namespace's labels to decide ``nvidia.com/gpu`` translation
    (``--gpu-translation``); None translates nothing."""


class BadRequestError(Exception):
    pass


class BusyError(Exception):
    pass


async def _body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused past ``limit`` bytes (read in chunks, never buffered beyond it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and len(declared) < 20 and int(declared) > limit:
        raise BadRequestError(f"malformed request: body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequestError(f"malformed request: body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _review_body(request: Request, slots: asyncio.Semaphore) -> bytes:
    """An AdmissionReview body: at most :data:`MAX_REVIEW_BYTES`, one of :data:`REVIEWS_AT_ONCE` slots
    (:class:`BusyError` when none frees within :data:`REVIEW_WAIT_S`), complete within
    :data:`REVIEW_DEADLINE_S`. The caller parses it at once, without yielding, so bodies
    held at any moment stay within the slots."""
    try:
        await asyncio.wait_for(slots.acquire(), REVIEW_WAIT_S)
    except TimeoutError as err:
        raise BusyError("admission webhook busy: too many reviews in progress, retry") from err
    try:
        async with asyncio.timeout(REVIEW_DEADLINE_S):
            return await _body(request, MAX_REVIEW_BYTES)
    except TimeoutError as err:
        raise BadRequestError(f"malformed request: body not complete within {REVIEW_DEADLINE_S:g} s") from err
    finally:
        slots.release()


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0] if err.errors() else {"msg": str(err), "loc": ()}
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise BadRequestError(f"malformed {model.__name__}: {where}: {first.get('msg')}") from err


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_args(body: bytes) -> ExtenderArgs:
    """The filter and prioritize request, as :func:`_parse` would give it. The common shape (``Pod`` and
    ``NodeNames``, thousands of names) is read with ``json`` into plain values, about twice as fast as
    validating it; anything else (full ``Nodes``, other keys, ``NaN``, surrogate escapes, bytes that are not
    UTF-8, a wrong type anywhere) goes through the wire model, so answers and 400 messages do not change."""
    try:
        doc = None if _SURROGATE.search(body) else json.loads(body.decode(), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError; nesting deeper than the stack
        doc = None
    if type(doc) is dict and doc.keys() <= _ARGS_KEYS and doc.get("Nodes") is None:
        pod, names = doc.get("Pod"), doc.get("NodeNames")
        if type(pod) is dict and type(names) is list and _all_str(names):
            return ExtenderArgs.model_construct(pod=pod, nodes=None, node_names=names)
    return _parse(ExtenderArgs, body)


def _all_str(items: list[Any]) -> bool:
    """Whether every item is a ``str``: one C-level pass (``str.join`` refuses anything else)."""
    try:
        "".join(items)
    except TypeError:
        return False
    return True


def _raw(payload: bytes | str) -> Response:
    return Response(content=payload, media_type=_JSON)


def _names_of(nodes: NodeList) -> list[str]:
    names = []
    for item in nodes.items:
        meta = item.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        names.append(name if isinstance(name, str) else "")
    return names


def _filter_answer(args: ExtenderArgs, outcome: FilterOutcome, full_mode: bool) -> str:
    doc: dict[str, Any] = {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": outcome.failed or None,
        "FailedAndUnresolvableNodes": outcome.unresolvable or None,
        "Error": "",
    }
    if full_mode:
        source = args.nodes or NodeList()
        passing = set(outcome.passing)
        items = [i for i, name in zip(source.items, _names_of(source), strict=True) if name in passing]
        doc["Nodes"] = {**source.model_dump(), "items": items}
    else:
        doc["NodeNames"] = outcome.passing
    return json.dumps(doc, separators=(",", ":"))


def _candidates(deps: Deps, args: ExtenderArgs) -> tuple[list[str], bool]:
    """The candidate node names and whether the answer is in full-Nodes mode. Only names are read from a
    request: a Node object's annotations (its GPU inventory) are whatever the caller wrote, while the state's
    inventory comes from the API server's watch, so full ``Nodes`` never change what the extender knows."""
    if args.node_names is not None:
        return args.node_names, False
    if args.nodes is not None:
        return [n for n in _names_of(args.nodes) if n], True
    return [], not deps.node_cache_capable


def _routes(app: FastAPI, deps: Deps, prefix: str) -> None:
    scheduler, metrics = deps.scheduler, deps.metrics

    async def filter_verb(request: Request) -> Response:
        args = _parse_args(await _body(request))
        names, full = _candidates(deps, args)
        return _raw(_filter_answer(args, scheduler.filter(args.pod, names), full))

    async def prioritize_verb(request: Request) -> Response:
        args = _parse_args(await _body(request))
        names, _ = _candidates(deps, args)
        scores = scheduler.prioritize(args.pod, names)
        return _raw(encode_host_priorities(scores))

    async def bind_verb(request: Request) -> Response:
        args = _parse(ExtenderBindingArgs, await _body(request))
        bound = await scheduler.bind(args.pod_namespace, args.pod_name, args.pod_uid, args.node)
        return _raw(ExtenderBindingResult(error=bound.error).model_dump_json(by_alias=True))

    async def preempt_verb(request: Request) -> Response:
        args = _parse(ExtenderPreemptionArgs, await _body(request))
        victims = _victim_uids(args)
        kept = scheduler.preempt(args.pod, victims)
        result = ExtenderPreemptionResult(
            node_name_to_meta_victims={
                node: MetaVictims(pods=[MetaPod(uid=u) for u in uids], num_pdb_violations=_pdb(args, node))
                for node, uids in kept.items()
            }
        )
        return _raw(result.model_dump_json(by_alias=True))

    verbs: dict[str, Callable[[Request], Awaitable[Response]]] = {
        "filter": filter_verb,
        "prioritize": prioritize_verb,
        "bind": bind_verb,
        "preempt": preempt_verb,
    }
    for verb, handler in verbs.items():
        # A plain (Starlette) route: the handler reads the raw body itself, so FastAPI's per-request
        # dependency and validation machinery would only add time.
        app.add_route(f"{prefix}/{verb}", _timed(metrics, verb, _led(deps, handler)), methods=["POST"])


def _led(
    deps: Deps, handler: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """A standby answers 503 unread (kube-scheduler treats it as an extender error and retries the pod); its
    ``/readyz`` fails too, so the Service sends the verbs to the leader only."""

    async def led(request: Request) -> Response:
        if not deps.serving():
            raise BusyError("standby replica: not the leader (or still rebuilding its state), retry")
        return await handler(request)

    return led


def _victim_uids(args: ExtenderPreemptionArgs) -> dict[str, list[str]]:
    if args.node_name_to_meta_victims is not None:
        return {n: [p.uid for p in v.pods or []] for n, v in args.node_name_to_meta_victims.items()}
    out: dict[str, list[str]] = {}
    for node, victims in (args.node_name_to_victims or {}).items():
        metas = [p.get("metadata") for p in victims.pods or []]
        out[node] = [str(m.get("uid", "")) for m in metas if isinstance(m, dict)]
    return out


def _pdb(args: ExtenderPreemptionArgs, node: str) -> int:
    for source in (args.node_name_to_meta_victims, args.node_name_to_victims):
        if source and node in source:
            return source[node].num_pdb_violations
    return 0


def _timed(
    metrics: ExtenderMetrics, verb: str, handler: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    async def timed(request: Request) -> Response:
        start = time.perf_counter()
        try:
            return await handler(request)
        except BadRequestError as err:
            metrics.bad_requests.labels(verb).inc()
            return JSONResponse({"Error": str(err)}, status_code=400)
        except BusyError as err:
            return JSONResponse({"Error": str(err)}, status_code=503, headers={"Retry-After": "1"})
        finally:
            metrics.observe(verb, time.perf_counter() - start)

    timed.__name__ = f"{verb}_verb"
    return timed


def _admission(app: FastAPI, deps: Deps) -> None:
    names = deps.state.names
    slots = asyncio.Semaphore(REVIEWS_AT_ONCE)
    lookups = asyncio.Semaphore(NAMESPACE_READS_AT_ONCE)

    async def review(request: Request, verb: str) -> Response:
        args = _parse(AdmissionReview, await _review_body(request, slots))
        if args.request is None:
            raise BadRequestError("AdmissionReview without a request")
        if verb == "validate":
            answer = validate(args.request, names)
        else:
            answer = await _mutate(deps, args.request, lookups)
        doc = {
            "apiVersion": args.apiVersion,
            "kind": "AdmissionReview",
            "response": answer.model_dump(exclude_none=True),
        }
        return _raw(json.dumps(doc))

    async def validate_verb(request: Request) -> Response:
        return await review(request, "validate")

    async def mutate_verb(request: Request) -> Response:
        return await review(request, "mutate")

    app.add_api_route("/validate", _timed(deps.metrics, "validate", validate_verb), methods=["POST"])
    app.add_api_route("/mutate", _timed(deps.metrics, "mutate", mutate_verb), methods=["POST"])


async def _mutate(deps: Deps, request: AdmissionRequest, lookups: asyncio.Semaphore) -> AdmissionResponse:
    """:func:`extender.webhook.mutate`, translating ``nvidia.com/gpu`` when the pod's namespace, read from the
    API server now, carries the translation label. Only the request's namespace is used (the API server sets
    it and refuses an object naming another); nothing on the pod can turn translation on. At most
    :data:`NAMESPACE_READS_AT_ONCE` reads run at once: the webhook port is open to every pod, and each read
    takes a worker thread the binds need too."""
    names = deps.state.names
    translate = False
    if deps.namespaces is not None and request.namespace and asks_nvidia_gpu(request.object or {}):
        try:
            await asyncio.wait_for(lookups.acquire(), REVIEW_WAIT_S)
        except TimeoutError:
            return _unavailable(request, "too many namespace reads in progress")
        try:
            labels = await deps.namespaces.namespace_labels(request.namespace)
        except ClusterError as err:
            return _unavailable(request, str(err))
        finally:
            lookups.release()
        translate = labels.get(names.translation) == TRANSLATION_ENABLED
    return mutate(request, names, deps.webhook_scheduler_name, translate_gpus=translate)


def _unavailable(request: AdmissionRequest, why: str) -> AdmissionResponse:
    message = (
        f"cannot read namespace {request.namespace}'s labels to decide whether to translate "
        f"{NVIDIA_GPU_RESOURCE} ({why}); retry"
    )
    status = AdmissionStatus(code=503, message=message, reason="ServiceUnavailable")
    return AdmissionResponse(uid=request.uid, allowed=False, status=status)


def _bare_app(title: str) -> FastAPI:
    return FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)


def create_app(deps: Deps) -> FastAPI:
    """The scheduling listener: kube-scheduler's verbs and nothing else (no health, metrics or webhook)."""
    app = _bare_app("kube-vgpu extender")
    prefix = "/" + deps.url_prefix.strip("/") if deps.url_prefix.strip("/") else ""
    _routes(app, deps, prefix)
    if prefix:
        _routes(app, deps, "")
    return app


def create_webhook_app(deps: Deps) -> FastAPI:
    """The admission listener: ``/validate`` and ``/mutate`` and nothing else."""
    app = _bare_app("kube-vgpu admission webhook")
    _admission(app, deps)
    return app


def create_metrics_app(deps: Deps) -> FastAPI:
    """The metrics listener: ``/metrics``, ``/healthz`` and ``/readyz``, read-only, and nothing else."""
    app = _bare_app("kube-vgpu extender metrics")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        listed, leading = deps.state.synced.is_set(), deps.serving()
        ready = listed and leading
        return Response(
            "ok" if ready else "cluster state not yet listed" if not listed else "standby: not the leader",
            media_type="text/plain",
            status_code=200 if ready else 503,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(deps.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
