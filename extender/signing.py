"""Ed25519 keys for assignments: the extender signs with its private key and verifies with a keyring.

The keyring holds the signing key's public half and every public key under ``--assignment-verify-keys``
(PEM ``PUBLIC KEY`` or ``CERTIFICATE`` blocks, one file or a directory of them): during a key rotation both
the old and the new key verify (docs/security.md, "Key rotation"). Key IDs are derived from the public key
(:func:`vcuda.signing.key_id`), so nothing has to be kept in step by hand. ``plugin.signing`` is this
module's verify-only twin (the two packages never import each other); both read key files through
:mod:`kube_vgpu_cli.keyfiles`.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kube_vgpu_cli.keyfiles import SigningKeyError, public_key_id, public_keys, read_key_file, verify_with

__all__ = [
    "AssignmentKeys",
    "Ed25519Signer",
    "Keyring",
    "SigningKeyError",
    "load_keys",
    "load_public_keys",
    "load_signer",
]


class Ed25519Signer:
    """Signs assignments with one private key (:class:`vcuda.signing.Signer`)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self._id = public_key_id(self.public)

    @property
    def key_id(self) -> str:
        return self._id

    def sign(self, payload: bytes) -> bytes:
        return self._private.sign(payload)


class Keyring:
    """Verifies with any of its public keys, chosen by key ID (:class:`vcuda.signing.Verifier`)."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys: Mapping[str, Ed25519PublicKey] = {public_key_id(k): k for k in keys}

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(self, key_id: str, payload: bytes, signature: bytes) -> bool:
        return verify_with(self._keys.get(key_id), payload, signature)


def load_signer(path: Path) -> Ed25519Signer:
    """The private key in ``path`` (PEM PKCS#8, as ``openssl genpkey -algorithm ed25519`` or helm's
    ``genPrivateKey "ed25519"`` write it)."""
    try:
        key = serialization.load_pem_private_key(read_key_file(path), password=None)
    except (ValueError, TypeError) as err:
        raise SigningKeyError(f"{path}: not a PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: holds a {type(key).__name__}, an Ed25519 private key is required")
    return Ed25519Signer(key)


def load_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in ``path`` (a file, or each file of a directory); none is an error."""
    return public_keys(path, refuse_private=False)


@dataclass(frozen=True, slots=True)
class AssignmentKeys:
    """The extender's signing key and the keyring it verifies with (the signing key's public half first)."""

    signer: Ed25519Signer
    keyring: Keyring


def load_keys(private: Path, verify: Path | None = None) -> AssignmentKeys:
    """The signing key in ``private`` and, when given, the extra public keys under ``verify``."""
    signer = load_signer(private)
    extra = load_public_keys(verify) if verify is not None else []
    return AssignmentKeys(signer, Keyring([signer.public, *extra]))
