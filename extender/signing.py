"""Ed25519 keys for assignments: the extender signs with its private key and verifies with a keyring.

The keyring holds the signing key's public half and every public key under ``--assignment-verify-keys``
(PEM ``PUBLIC KEY`` or ``CERTIFICATE`` blocks, one file or a directory of them): during a key rotation both
the old and the new key verify (docs/security.md, "Key rotation"). Key IDs are derived from the public key
(:func:`vcuda.signing.key_id`), so nothing has to be kept in step by hand. ``plugin.signing`` is this
module's verify-only twin (the two packages never import each other).
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vcuda.signing import key_id

__all__ = [
    "AssignmentKeys",
    "Ed25519Signer",
    "Keyring",
    "SigningKeyError",
    "load_keys",
    "load_public_keys",
    "load_signer",
]

_PEM: Final = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)
_MAX_KEY_FILE: Final = 64 * 1024


class SigningKeyError(ValueError):
    """A key file that cannot be used, with the path and the reason."""


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Ed25519Signer:
    """Signs assignments with one private key (:class:`vcuda.signing.Signer`)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self._id = key_id(_raw(self.public))

    @property
    def key_id(self) -> str:
        return self._id

    def sign(self, payload: bytes) -> bytes:
        return self._private.sign(payload)


class Keyring:
    """Verifies with any of its public keys, chosen by key ID (:class:`vcuda.signing.Verifier`)."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys: Mapping[str, Ed25519PublicKey] = {key_id(_raw(k)): k for k in keys}

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(self, key_id: str, payload: bytes, signature: bytes) -> bool:
        key = self._keys.get(key_id)
        if key is None:
            return False
        try:
            key.verify(signature, payload)
        except InvalidSignature:
            return False
        return True


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as err:
        raise SigningKeyError(f"{path}: cannot read: {err}") from err
    if len(data) > _MAX_KEY_FILE:
        raise SigningKeyError(f"{path}: larger than {_MAX_KEY_FILE} bytes, not a key file")
    return data


def load_signer(path: Path) -> Ed25519Signer:
    """The private key in ``path`` (PEM PKCS#8, as ``openssl genpkey -algorithm ed25519`` or helm's
    ``genPrivateKey "ed25519"`` write it)."""
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as err:
        raise SigningKeyError(f"{path}: not a PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: holds a {type(key).__name__}, an Ed25519 private key is required")
    return Ed25519Signer(key)


def _public(block: bytes, kind: bytes, path: Path) -> Ed25519PublicKey | None:
    if kind not in (b"CERTIFICATE", b"PUBLIC KEY"):
        return None
    try:
        key: object = (
            x509.load_pem_x509_certificate(block).public_key()
            if kind == b"CERTIFICATE"
            else serialization.load_pem_public_key(block)
        )
    except ValueError as err:
        raise SigningKeyError(f"{path}: unreadable {kind.decode()}: {err}") from err
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: a {kind.decode()} holds a non-Ed25519 key")
    return key


def _files(path: Path) -> list[Path]:
    if path.is_dir():  # a mounted ConfigMap: skip its ..data links and dot-files
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    return [path]


def load_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in ``path`` (a file, or each file of a directory); none is an error."""
    keys = [
        key
        for file in _files(path)
        for match in _PEM.finditer(_read(file))
        if (key := _public(match.group(0), match.group(1), file)) is not None
    ]
    if not keys:
        raise SigningKeyError(f"{path}: holds no PEM PUBLIC KEY or CERTIFICATE")
    return keys


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
