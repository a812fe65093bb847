"""Attack: JSON nested deeper than Python's stack in kube-vgpu's annotations, to knock out their readers.

Threats: a tenant (on a cluster without the chart's ValidatingAdmissionPolicy it can write its own pod's
``vgpu-assignment`` and ``vgpu-status`` on UPDATE, and the webhook lets a pod without a GPU request carry them
on CREATE), and a compromised GPU node (it writes its own Node's ``vgpu-inventory``). ``[[[[...]]]]``, 100 KB
(under the API server's 256 KB annotation limit), made ``json.loads`` raise ``RecursionError``, which is no
``ContractError``: every reader let it out. The extender's watch stopped on that event and its re-list met
the same object, so after a restart it never became ready: one tenant or one node stopped scheduling for the
whole cluster. The plugin's pod reader (``pending_pod``) raised too, failing every allocation on the node.
Now the decoders turn it into a ``ContractError`` (a malformed annotation, ignored and counted like any other).
"""

import asyncio

import pytest

from plugin.core.pods import pending_pod
from tests.fakes.extender import NAMES, gpu_node, ledger_of, pod_obj
from tests.fakes.kmock import KmockCluster
from tests.fixtures.extender_kmock import (
    Extender,
    create_pod,
    has_inventory,
    read_pod,
    wait_until,
)
from tests.signing_keys import KEYRING
from vcuda.annotations import decode_assignment_unverified, decode_inventory, decode_status
from vcuda.errors import ContractError

DEEP = "[" * 50_000 + "]" * 50_000


@pytest.mark.parametrize("decode", [decode_assignment_unverified, decode_status, decode_inventory])
def test_every_annotation_decoder_refuses_deep_nesting_as_malformed(decode):
    with pytest.raises(ContractError):
        decode(DEEP)


@pytest.mark.parametrize("key", [NAMES.assignment, NAMES.status])
def test_the_plugin_reads_such_a_pod_as_invalid_not_as_a_crash(key):
    pod = pod_obj("p", (30, 4096), node="n1", annotations={key: DEEP})
    if key == NAMES.status:
        pod["metadata"]["annotations"][NAMES.assignment] = "{}"
    found = pending_pod(pod, NAMES, KEYRING, "n1")
    assert isinstance(found, str)


def test_a_tenant_or_a_node_writing_nested_json_does_not_stop_the_extender():
    with KmockCluster() as api:
        core = api.core()
        core.create_node(gpu_node("n1", gpus=2), _preload_content=False)
        evil = gpu_node("evil", gpus=1)
        evil["metadata"]["annotations"][NAMES.inventory] = DEEP
        core.create_node(evil, _preload_content=False)
        with Extender(api) as first:
            wait_until(lambda: has_inventory(first.state, "n1"), "inventory")
            create_pod(api, pod_obj("tenant", annotations={NAMES.assignment: DEEP, NAMES.status: DEEP}))
            honest = create_pod(api, pod_obj("honest", (100, 0)))
            assert read_pod(api, "tenant")["metadata"]["annotations"][NAMES.assignment] == DEEP
            bound = asyncio.run(first.scheduler.bind("default", "honest", honest["metadata"]["uid"], "n1"))
            assert bound.error == ""
            wait_until(lambda: len(ledger_of(first.state, "n1").load) == 1, "the honest pod's GPU")
        with Extender(api) as second:  # a restart: lists hold both hostile objects
            wait_until(lambda: len(ledger_of(second.state, "n1").load) == 1, "the rebuilt load")
            assert not has_inventory(second.state, "evil")
