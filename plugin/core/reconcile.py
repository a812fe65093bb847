"""After the kubelet (re)registers us: which ``Allocate`` answers did its checkpoint lose? Stdlib only.

The kubelet records an ``Allocate`` answer in its device checkpoint after the call returns; a kubelet that
crashes in between comes back without it, admits the pod again and calls ``Allocate`` once more. Until then
the plugin's book still counts the container as allocated, so the repeated call would be attributed to
another container. :func:`reconcile` compares the *suspects* (the records not confirmed by
``PreStartContainer`` that were made before the new registration) with one PodResources ``List``:

- some container holds exactly the record's IDs: the kubelet has the answer; **kept** (``PreStartContainer``
  still verifies who holds them);
- the record's pod is listed but no container holds those IDs: the answer was lost; **dropped** (the container
  is pending again; a ``PreStartContainer`` with those IDs finds no record and is refused);
- the record's pod is not listed: the kubelet has not seen the pod (yet); **undecided**, asked again later;
- the record's pod is listed but its container is not: a regular init container, which PodResources never
  lists (only app containers and sidecars), so ``List`` cannot tell whether the kubelet kept the answer;
  **undecided**, never dropped (dropping it would refuse the init container's ``PreStartContainer`` and fail
  the pod). Its ``PreStartContainer`` confirms it, or reclaim removes it with the pod.

Confirmed records are never suspects: ``PreStartContainer`` runs only after the checkpoint was written.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from plugin.core.attribution import ContainerKey

__all__ = ["KubeletView", "Reconciliation", "Suspect", "reconcile"]


@dataclass(frozen=True, slots=True)
class Suspect:
    """An unconfirmed allocation record from before the kubelet's latest registration."""

    dir_name: str
    device_ids: frozenset[str]
    owner: ContainerKey


@dataclass(frozen=True, slots=True)
class KubeletView:
    """One PodResources ``List``: the pods listed (namespace, name), the ID sets containers hold, and the
    containers listed (namespace, pod, container); ``None``: every container of a listed pod counts as listed.
    """

    pods: frozenset[tuple[str, str]]
    held: frozenset[frozenset[str]]
    containers: frozenset[tuple[str, str, str]] | None = None


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """Directory names of the suspects, by verdict."""

    kept: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    undecided: tuple[str, ...] = ()


def reconcile(suspects: Iterable[Suspect], view: KubeletView) -> Reconciliation:
    kept, dropped, undecided = [], [], []
    for s in sorted(suspects, key=lambda s: s.dir_name):
        if s.device_ids in view.held:
            kept.append(s.dir_name)
        elif (s.owner.pod.namespace, s.owner.pod.name) in view.pods and _listed(s, view):
            dropped.append(s.dir_name)
        else:
            undecided.append(s.dir_name)
    return Reconciliation(tuple(kept), tuple(dropped), tuple(undecided))


def _listed(suspect: Suspect, view: KubeletView) -> bool:
    """Whether ``List`` shows the suspect's container at all (a regular init container never is)."""
    pod = suspect.owner.pod
    return view.containers is None or (pod.namespace, pod.name, suspect.owner.container) in view.containers
