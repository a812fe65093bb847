"""``kube-vgpu-extender keygen`` (the chart's key Job) against kmock through the real ``kubernetes`` client and
the real entry point: the key pair is made once, a second run (every ``helm upgrade``) keeps it and only
rewrites the public keys, the public ConfigMap verifies what the private key signs, and two runs racing to
create the Secret agree on one key (the loser's create gets kmock's 409 AlreadyExists, as the API server's)."""

import base64
import threading
from pathlib import Path
from typing import Any

import pytest

from extender.__main__ import main
from extender.keygen import KeygenError, ensure_keys, public_pem
from extender.signing import load_signer
from plugin.signing import load_keyring
from tests.fakes.kmock import KmockCluster
from tests.keygen_job import kubeconfig_for
from tests.signing_keys import OTHER_SIGNER
from tests.signing_keys import public_pem as signer_public_pem

NS, SECRET, PUBLIC = "kube-system", "kube-vgpu-assignment-key", "kube-vgpu-assignment-public-keys"


@pytest.fixture
def cluster() -> Any:
    with KmockCluster() as running:
        yield running


def _keygen(cluster: KmockCluster, tmp_path: Path, *extra: str) -> int:
    kubeconfig = kubeconfig_for(cluster.url, tmp_path / "kubeconfig")
    argv = ["keygen", f"--namespace={NS}", f"--secret={SECRET}", f"--public-configmap={PUBLIC}", *extra]
    return main([*argv, f"--kubeconfig={kubeconfig}"])


def _private(cluster: KmockCluster) -> bytes:
    return base64.b64decode(cluster.core().read_namespaced_secret(SECRET, NS).data["key"])


def _public(cluster: KmockCluster) -> dict[str, str]:
    data: dict[str, str] = cluster.core().read_namespaced_config_map(PUBLIC, NS).data
    return data


def test_creates_the_key_once_and_a_second_run_keeps_it(cluster: KmockCluster, tmp_path: Path) -> None:
    assert _keygen(cluster, tmp_path, "--label=app.kubernetes.io/name=kube-vgpu") == 0
    first = _private(cluster)
    assert b"BEGIN PRIVATE KEY" in first
    secret = cluster.core().read_namespaced_secret(SECRET, NS)
    assert secret.metadata.labels == {"app.kubernetes.io/name": "kube-vgpu"}
    assert secret.metadata.annotations == {"helm.sh/resource-policy": "keep"}
    assert _keygen(cluster, tmp_path) == 0
    assert _private(cluster) == first
    assert cluster.emulator is not None
    assert cluster.emulator.counts[("create", "secrets")] == 1


def test_the_public_configmap_verifies_what_the_private_key_signs(
    cluster: KmockCluster, tmp_path: Path
) -> None:
    old = tmp_path / "extra"
    old.mkdir()
    (old / "previous.pem").write_bytes(signer_public_pem(OTHER_SIGNER))
    (old / "notes.txt").write_text("not a key")
    assert _keygen(cluster, tmp_path, f"--extra-public-keys={old}") == 0
    (tmp_path / "key").write_bytes(_private(cluster))
    public = tmp_path / "public"
    public.mkdir()
    data = _public(cluster)
    assert set(data) == {"signing.pem", "previous.pem"}
    for name, text in data.items():
        (public / name).write_text(text)
    signer = load_signer(tmp_path / "key")
    keyring = load_keyring(public)
    assert keyring.key_ids == {signer.key_id, OTHER_SIGNER.key_id}
    assert keyring.verify(signer.key_id, b"payload", signer.sign(b"payload"))


def test_a_rerun_rewrites_the_public_keys_from_the_kept_secret(cluster: KmockCluster, tmp_path: Path) -> None:
    """An upgrade that ends a rotation (extraPublicKeys emptied) drops the old key; the signing key stays."""
    old = tmp_path / "extra"
    old.mkdir()
    (old / "previous.pem").write_bytes(signer_public_pem(OTHER_SIGNER))
    assert _keygen(cluster, tmp_path, f"--extra-public-keys={old}") == 0
    cluster.core().patch_namespaced_config_map(PUBLIC, NS, {"data": {"signing.pem": "tampered"}})
    assert _keygen(cluster, tmp_path) == 0
    assert _public(cluster) == {"signing.pem": public_pem(_private(cluster))}


class _LosesTheRace:
    """The real client, but another run creates the Secret between this run's read (404) and its create."""

    def __init__(self, core: Any) -> None:
        self._core = core
        self.winner = b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)

    def create_namespaced_secret(self, namespace: str, body: Any) -> Any:
        if not self.winner:
            self.winner = ensure_keys_in(self._core)
        return self._core.create_namespaced_secret(namespace, body)


def ensure_keys_in(core: Any) -> bytes:
    ensure_keys(core, NS, SECRET)
    return base64.b64decode(core.read_namespaced_secret(SECRET, NS).data["key"])


def test_a_concurrent_create_takes_the_winners_key(cluster: KmockCluster) -> None:
    racing = _LosesTheRace(cluster.core())
    public = ensure_keys(racing, NS, SECRET, public_configmap=PUBLIC)
    assert racing.winner
    assert _private(cluster) == racing.winner
    assert public == public_pem(racing.winner) == _public(cluster)["signing.pem"]


def test_parallel_runs_agree_on_one_key(cluster: KmockCluster) -> None:
    publics: list[str] = []
    runs = [
        threading.Thread(
            target=lambda: publics.append(ensure_keys(cluster.core(), NS, SECRET, "key", PUBLIC))
        )
        for _ in range(4)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=30)
    assert len(publics) == 4
    assert len(set(publics)) == 1
    assert publics[0] == public_pem(_private(cluster)) == _public(cluster)["signing.pem"]


def test_a_secret_without_an_ed25519_key_is_an_error_and_is_left_alone(
    cluster: KmockCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hmac = base64.b64encode(b"an old HMAC key").decode()
    cluster.core().create_namespaced_secret(NS, {"metadata": {"name": SECRET}, "data": {"key": hmac}})
    assert _keygen(cluster, tmp_path) == 1
    assert "not a PEM private key" in capsys.readouterr().err
    assert cluster.core().read_namespaced_secret(SECRET, NS).data == {"key": hmac}
    with pytest.raises(KeygenError, match="no key 'other'"):
        ensure_keys(cluster.core(), NS, SECRET, "other")
