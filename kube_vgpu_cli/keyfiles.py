"""Ed25519 public keys from PEM files, shared by ``extender.signing`` and ``plugin.signing``.

A key path is one file or a directory of them (a mounted ConfigMap: its ``..data`` links and dot-files are
skipped); each file is read bounded (:data:`MAX_KEY_FILE`) and may hold ``PUBLIC KEY`` and ``CERTIFICATE``
blocks. Key IDs are derived from the public key (:func:`vcuda.signing.key_id`).
"""

import re
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vcuda.signing import key_id

__all__ = ["MAX_KEY_FILE", "SigningKeyError", "public_key_id", "public_keys", "read_key_file", "verify_with"]

_PEM: Final = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)
MAX_KEY_FILE: Final = 64 * 1024


class SigningKeyError(ValueError):
    """A key file that cannot be used, with the path and the reason."""


def public_key_id(public: Ed25519PublicKey) -> str:
    """The key ID of ``public`` (of its raw 32 bytes)."""
    return key_id(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def verify_with(key: Ed25519PublicKey | None, payload: bytes, signature: bytes) -> bool:
    """Whether ``key`` (None: no such key) signed ``payload`` with ``signature``."""
    if key is None:
        return False
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def read_key_file(path: Path) -> bytes:
    """The bytes of ``path``, at most :data:`MAX_KEY_FILE` of them; raises :class:`SigningKeyError`."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as err:
        raise SigningKeyError(f"{path}: cannot read: {err}") from err
    if len(data) > MAX_KEY_FILE:
        raise SigningKeyError(f"{path}: larger than {MAX_KEY_FILE} bytes, not a key file")
    return data


def _public(block: bytes, kind: bytes, path: Path, refuse_private: bool) -> Ed25519PublicKey | None:
    if refuse_private and (kind == b"PRIVATE KEY" or kind.endswith(b" PRIVATE KEY")):
        raise SigningKeyError(f"{path}: holds a private key; nodes must be given public keys only")
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


def public_keys(path: Path, *, refuse_private: bool) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in ``path`` (a file, or each file of a directory); none is an error, and so is
    any ``PRIVATE KEY`` block when ``refuse_private``. Raises :class:`SigningKeyError`."""
    keys = [
        key
        for file in _files(path)
        for match in _PEM.finditer(read_key_file(file))
        if (key := _public(match.group(0), match.group(1), file, refuse_private)) is not None
    ]
    if not keys:
        raise SigningKeyError(f"{path}: holds no PEM PUBLIC KEY or CERTIFICATE")
    return keys
