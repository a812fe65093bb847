# mypy: disable-error-code="no-untyped-call"
"""Forged and copied assignments against the device plugin, through the kubelet's real gRPC calls (FakeKubelet
on Unix sockets, kmock as the API server, tests/fixtures/plugin_env.py).

Attacker: a tenant who can create pods with ``spec.nodeName`` set (skipping the scheduler) and write their
annotations, and who can read other pods' assignments. Cases: a genuine assignment copied onto the tenant's
pod is refused at ``Allocate`` when the owner is gone, and refused at ``PreStartContainer`` when the owner is
still pending (the kubelet hands the tenant the owner's devices, PodResources shows who holds them); a pod
whose GPU request changed after signing (the tenant raised its core limit) is refused at ``Allocate``; the
plugin records a swap of interchangeable containers in its *status* and leaves the extender's signed
assignment byte for byte as it was; a node given a private key instead of public keys refuses to start.
"""

import grpc
import pytest

from plugin.__main__ import main
from tests.builders.plugin import NAMES, pod_body
from tests.signing_keys import private_pem, public_pem
from vcuda.model import Phase

G = "GPU-node-1-{:04d}".format
pytestmark = pytest.mark.timeout(60)


def copy_assignment(env, source: str, target: str, containers) -> None:
    """Create ``target`` bound to the node, carrying ``source``'s genuine annotation verbatim."""
    text = env.pod(source)["metadata"]["annotations"][NAMES.assignment]
    body = pod_body(target, containers, annotations={NAMES.assignment: text})
    env.core.create_namespaced_pod("default", body, _preload_content=False)
    env.cluster.bind("default", target, "node-1")


async def test_a_copied_assignment_is_refused_at_allocate_once_its_owner_is_gone(env_factory):
    env = await env_factory()
    env.create_pod("owner", [("main", 100, 0)], {"main": [(G(0), 100, 81559)]})
    copy_assignment(env, "owner", "thief", [("main", 100, 0)])
    env.core.delete_namespaced_pod("owner", "default", _preload_content=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.admit("thief", [("main", 100)])
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "no pending container" in str(err.value.details())


async def test_a_copied_assignment_never_starts_on_its_owners_devices(env_factory):
    env = await env_factory()
    env.create_pod("owner", [("main", 100, 0)], {"main": [(G(0), 100, 81559)]})
    copy_assignment(env, "owner", "thief", [("main", 100, 0)])
    # The kubelet admits the thief first: Allocate (which names no pod) serves the owner's pending record...
    [admitted] = await env.admit("thief", [("main", 100)])
    # ...but PreStart checks PodResources: the thief holds the devices, and the thief has no valid assignment.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.start_container("thief", "main")
    assert str(err.value.details()).startswith("kube-vgpu attribution mismatch:")
    assert env.status("thief").phase is Phase.FAILED  # the refusal lands on the thief...
    assert env.status("owner") is None  # ...while the owner is still pending (its GPU once the thief is gone)
    assert admitted.pod == "thief"


async def test_a_pod_whose_request_changed_after_signing_is_refused(env_factory):
    env = await env_factory()
    env.create_pod("grower", [("main", 30, 4096)], {"main": [(G(0), 30, 4096)]})
    patch = {"metadata": {"annotations": {NAMES.core_limit: "100"}}}  # the tenant raises its soft limit
    env.core.patch_namespaced_pod("grower", "default", patch, _preload_content=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.admit("grower", [("main", 30)])
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_a_swap_is_recorded_in_the_status_and_never_re_signs(env_factory):
    env = await env_factory()
    signed = {}
    for i, name in enumerate(["p1", "p2", "p3"]):
        env.create_pod(name, [("main", 100, 0)], {"main": [(G(i), 100, 81559)]})
        signed[name] = env.pod(name)["metadata"]["annotations"][NAMES.assignment]
    admitted = []
    for name in ("p3", "p1", "p2"):  # the kubelet admits in reverse and ignores the preference
        admitted += await env.admit(name, [("main", 100)], follow_preference=False)
    for a in admitted:
        await env.start_container(a.pod, "main")
    for name in ("p1", "p2", "p3"):
        assert env.pod(name)["metadata"]["annotations"][NAMES.assignment] == signed[name]
        assert env.status(name).phase is Phase.ALLOCATED
    moved = {name: env.status(name).moved for name in ("p1", "p2", "p3")}
    assert any(moved.values()), "the kubelet's order forced at least one swap"
    held = sorted(s.uuid for n in ("p1", "p2", "p3") for s in env.recorded(n).container("main").shares)
    assert held == [G(0), G(1), G(2)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(private_pem(), "private key", id="a private key"),
        pytest.param(b"k" * 32, "no PEM", id="an HMAC secret"),
        pytest.param(public_pem() + private_pem(), "private key", id="public and private together"),
    ],
)
def test_a_node_with_anything_but_public_keys_refuses_to_start(capsys, tmp_path, content, message):
    key = tmp_path / "key"
    key.write_bytes(content)
    assert main(["--node-name=n1", f"--assignment-key-file={key}"]) == 2
    assert message in capsys.readouterr().err
