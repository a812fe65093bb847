"""Key rotation (docs/security.md, "Key rotation"), through the real key loaders and files as the chart
mounts them: a Secret file with the extender's private key, a directory of public PEM files (the ConfigMap).

Cases: during the window both the old and the new key verify, for the extender (holdings from pods signed
by either) and for the plugin (pending pods signed by either); the extender signs with the new key only;
a plugin picks up a key added to its directory without a restart (after its reload period), and keeps its
keys when the directory is briefly unreadable; once the old key is removed, an old-signed assignment is
refused by the plugin while the extender still charges the running pod (unplaced), so nothing is sold twice.
"""

from pathlib import Path
from typing import Any

import pytest

from extender.clusterstate import ClusterState
from extender.signing import Ed25519Signer, load_keys
from plugin.core.pods import pending_pod
from plugin.signing import Keyring, load_keyring
from tests.builders.vcuda import uuid
from tests.fakes.extender import NAMES, gpu_node, pod_obj
from tests.signing_keys import (
    OTHER_PRIVATE,
    OTHER_SIGNER,
    PRIVATE,
    SIGNER,
    public_pem,
    sign_for,
    write_private_key,
)
from vcuda.model import ContainerAssignment, GpuShare, NodeName, PodAssignment

OLD, NEW = OTHER_SIGNER, SIGNER  # OTHER_PRIVATE is the old key, PRIVATE the new one


def share(gpu: int) -> PodAssignment:
    return PodAssignment(
        NodeName("n1"), (ContainerAssignment("c0", (GpuShare(uuid("n1", gpu), 30, 4096),), 30),)
    )


def signed_pod(name: str, gpu: int, signer: Ed25519Signer) -> dict[str, Any]:
    pod = pod_obj(name, (30, 4096), uid=f"uid-{name}", node="n1", phase="Running")
    pod["metadata"]["annotations"][NAMES.assignment] = sign_for(pod, share(gpu), NAMES, signer)
    return pod


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """The window: the Secret holds the new private key; the ConfigMap both public keys."""
    private = write_private_key(tmp_path / "key", PRIVATE)
    public = tmp_path / "public"
    public.mkdir()
    (public / "signing.pem").write_bytes(public_pem(NEW))
    (public / "previous.pem").write_bytes(public_pem(OLD))
    return private, public


def extender_state(private: Path, public: Path) -> tuple[ClusterState, Ed25519Signer]:
    loaded = load_keys(private, public)
    state = ClusterState(NAMES, loaded.keyring, grace_s=60, clock=lambda: 0.0)
    state.replace_nodes([gpu_node("n1", gpus=2)])
    return state, loaded.signer


def test_during_the_window_both_keys_verify_and_only_the_new_one_signs(keys):
    state, signer = extender_state(*keys)
    assert signer.key_id == NEW.key_id
    state.replace_pods([signed_pod("old", 0, OLD), signed_pod("new", 1, NEW)])
    ledger = state.ledger("n1")
    assert ledger is not None
    assert {u: (load.cores, load.memory_mib) for u, load in ledger.load.items()} == {
        uuid("n1", 0): (30, 4096),
        uuid("n1", 1): (30, 4096),
    }
    keyring = load_keyring(keys[1])
    for pod in (signed_pod("old", 0, OLD), signed_pod("new", 1, NEW)):
        found = pending_pod(pod, NAMES, keyring, "n1")
        assert not isinstance(found, str), found


def test_after_the_window_the_old_key_is_refused_and_its_running_pod_still_counts(keys):
    private, public = keys
    (public / "previous.pem").unlink()
    state, _ = extender_state(private, public)
    state.replace_pods([signed_pod("old", 0, OLD)])
    ledger = state.ledger("n1")
    assert ledger is not None
    assert [load.cores for load in ledger.load.values()] == [30, 30]  # charged unplaced, on both GPUs
    found = pending_pod(signed_pod("old", 0, OLD), NAMES, load_keyring(public), "n1")
    assert isinstance(found, str)
    assert "not signed by a kube-vgpu key" in found


def test_a_plugin_picks_up_a_new_key_without_a_restart(tmp_path):
    public = tmp_path / "public"
    public.mkdir()
    (public / "signing.pem").write_bytes(public_pem(OLD))
    now = [0.0]
    keyring = Keyring(public, reload_s=10, clock=lambda: now[0])
    pod = signed_pod("p", 0, NEW)
    (public / "next.pem").write_bytes(public_pem(NEW))  # step 1 of the rotation: publish the new key
    assert isinstance(pending_pod(pod, NAMES, keyring, "n1"), str)  # not re-read yet (rate limit)
    now[0] = 11
    assert not isinstance(pending_pod(pod, NAMES, keyring, "n1"), str)
    assert keyring.key_ids == {OLD.key_id, NEW.key_id}


def test_a_plugin_keeps_its_keys_when_the_directory_is_briefly_unreadable(tmp_path):
    public = tmp_path / "public"
    public.mkdir()
    (public / "signing.pem").write_bytes(public_pem(NEW))
    now = [0.0]
    keyring = Keyring(public, reload_s=1, clock=lambda: now[0])
    (public / "signing.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")
    now[0] = 5
    assert not keyring.verify("ed25519-unknown", b"x", b"y")  # triggers a re-read, which fails
    assert keyring.key_ids == {NEW.key_id}


def test_the_extender_refuses_a_public_key_as_its_signing_key(tmp_path):
    from extender.signing import SigningKeyError, load_signer

    path = tmp_path / "key"
    path.write_bytes(public_pem(NEW))
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        load_signer(path)
    write_private_key(path, OTHER_PRIVATE)
    assert load_signer(path).key_id == OLD.key_id
