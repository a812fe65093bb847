"""``make demo-k8s``: the example pods of ``make demo`` on the REAL control plane of the k8s tier.

Real: etcd, kube-apiserver (admission, the chart's webhooks, RBAC), kube-scheduler with the chart's
configuration, and the extender with the chart's arguments and service account (:mod:`tests.k8s.cluster`).
Not run: kubelets and the plugin (nodes are created through the API with the capacity and inventory the plugin
publishes; ``tests/k8s/test_kubelet.py`` runs the real kubelet), so pods end bound, not Running.
Prints where each container landed and why the others did not; exits 0 when every example settled as
expected (bound, refused at admission, or reported unschedulable), 1 otherwise.
"""

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from tests.builders.vcuda import nvswitch_node, pcie_node
from tests.k8s.cluster import NAMES, K8sCluster
from tests.k8s.controlplane import K8S_VERSION, binaries_missing
from tests.sim.demo import TOO_LARGE, demo_pods
from tests.sim.report import format_table
from vcuda.annotations import decode_assignment_unverified

__all__ = ["main"]

NODES = {
    "k8s-h100-a": nvswitch_node(8, node="k8s-h100-a"),
    "k8s-h100-b": nvswitch_node(8, node="k8s-h100-b"),
    "k8s-a10": pcie_node(4, node="k8s-a10", memory_mib=23028),
}


def _quantities_as_strings(pod: dict[str, Any]) -> dict[str, Any]:
    """YAML numbers in ``resources`` as the strings the API returns (the client's models accept only those)."""
    pod = json.loads(json.dumps(pod))
    spec = pod["spec"]
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        for kind in ("limits", "requests"):
            amounts = (container.get("resources") or {}).get(kind) or {}
            amounts.update({name: str(value) for name, value in amounts.items()})
    pod["metadata"]["namespace"] = "default"
    return pod


def _submit(core: Any, pods: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """Create each pod; the names created and, for the refused ones, the API server's message."""
    created, refused = [], {}
    for pod in pods:
        name = pod["metadata"]["name"]
        try:
            core.create_namespaced_pod("default", _quantities_as_strings(pod))
            created.append(name)
        except ApiException as err:
            refused[name] = json.loads(str(err.body)).get("message", str(err))
    return created, refused


def _outcome(core: Any, name: str) -> tuple[str, str] | None:
    """(node, GPUs) once bound, ("-", reason) once reported unschedulable, None while undecided."""
    pod = core.read_namespaced_pod(name, "default")
    if pod.spec.node_name:
        assignment = decode_assignment_unverified(pod.metadata.annotations[NAMES.assignment])
        gpus = "; ".join(
            f"{c.name}: " + ", ".join(f"{s.uuid} {s.cores}% {s.memory_mib}MiB" for s in c.shares)
            for c in assignment.containers
        )
        return pod.spec.node_name, gpus
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
    failed = [e.message for e in events if e.reason == "FailedScheduling"]
    return ("-", failed[-1]) if failed else None


def _settle(core: Any, names: Sequence[str], timeout_s: float = 60.0) -> dict[str, tuple[str, str] | None]:
    deadline = time.monotonic() + timeout_s
    outcomes: dict[str, tuple[str, str] | None] = dict.fromkeys(names)
    while time.monotonic() < deadline and any(v is None for v in outcomes.values()):
        outcomes = {n: outcomes[n] or _outcome(core, n) for n in names}
        time.sleep(0.5)
    return outcomes


def run(workdir: Path) -> int:
    cluster = K8sCluster(workdir)
    try:
        cluster.start()
        for name, inventory in NODES.items():
            cluster.add_gpu_node(name, inventory)
        core = cluster.client("CoreV1Api")
        cluster.fill_namespace("default")
        print(
            f"Kubernetes {K8S_VERSION} on 127.0.0.1: etcd, kube-apiserver, kube-scheduler, kube-vgpu-extender"
        )
        created, refused = _submit(core, [*demo_pods(), TOO_LARGE])
        outcomes = _settle(core, created)
    finally:
        cluster.stop()
    rows = [(n, *(o or ("?", "not decided in 60 s"))) for n, o in outcomes.items()]
    rows += [(n, "refused", message) for n, message in refused.items()]
    print(format_table(("POD", "NODE", "GPUs / reason"), rows))
    expected = {n for n in created if n != TOO_LARGE["metadata"]["name"]}
    ok = all(o is not None and (o[0] != "-") == (n in expected) for n, o in outcomes.items())
    print("OK: every example settled as expected" if ok else "FAILED: see the table")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", type=Path, help="keep logs and certificates here")
    args = parser.parse_args(argv)
    if binaries_missing():
        print(f"missing {', '.join(binaries_missing())}: run `make k8s-controlplane`", file=sys.stderr)
        return 2
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(args.workdir)
    with tempfile.TemporaryDirectory(prefix="kv-k8s-demo-") as tmp:
        return run(Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
