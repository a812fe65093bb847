"""The plugin's verify-only keyring: Ed25519 public keys, never a private one.

A node holds only public keys (a ConfigMap the DaemonSet mounts), so a compromised node cannot forge an
assignment for any other node or pod. The key files are re-read (at most every ``reload_s``) when an
assignment names a key ID the ring does not know, so a rotation's new key is picked up without a restart
(docs/security.md, "Key rotation"). Twin of ``extender.signing``'s verifying half: the extender and the
plugin never import each other.
"""

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vcuda.signing import key_id

__all__ = ["Keyring", "SigningKeyError", "load_keyring"]

log = logging.getLogger(__name__)
_PEM: Final = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)
_MAX_KEY_FILE: Final = 64 * 1024


class SigningKeyError(ValueError):
    """A key file that cannot be used, with the path and the reason."""


def _id(public: Ed25519PublicKey) -> str:
    return key_id(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as err:
        raise SigningKeyError(f"{path}: cannot read: {err}") from err
    if len(data) > _MAX_KEY_FILE:
        raise SigningKeyError(f"{path}: larger than {_MAX_KEY_FILE} bytes, not a key file")
    return data


def _public(block: bytes, kind: bytes, path: Path) -> Ed25519PublicKey | None:
    if kind == b"PRIVATE KEY" or kind.endswith(b" PRIVATE KEY"):
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


def _load(path: Path) -> dict[str, Ed25519PublicKey]:
    keys = {
        _id(key): key
        for file in _files(path)
        for match in _PEM.finditer(_read(file))
        if (key := _public(match.group(0), match.group(1), file)) is not None
    }
    if not keys:
        raise SigningKeyError(f"{path}: holds no PEM PUBLIC KEY or CERTIFICATE")
    return keys


class Keyring:
    """Verifies with the public keys under ``path`` (:class:`vcuda.signing.Verifier`)."""

    def __init__(
        self, path: Path, *, reload_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._path, self._reload_s, self._clock = path, reload_s, clock
        self._keys = _load(path)
        self._loaded_at = clock()

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(self, key_id: str, payload: bytes, signature: bytes) -> bool:
        key = self._keys.get(key_id) or self._reloaded(key_id)
        if key is None:
            return False
        try:
            key.verify(signature, payload)
        except InvalidSignature:
            return False
        return True

    def _reloaded(self, wanted: str) -> Ed25519PublicKey | None:
        if self._clock() - self._loaded_at < self._reload_s:
            return None
        self._loaded_at = self._clock()
        try:
            self._keys = _load(self._path)
        except SigningKeyError as err:  # keep the keys we have; a half-written update is retried later
            log.warning("could not re-read the assignment keys: %s", err)
        return self._keys.get(wanted)


def load_keyring(path: Path) -> Keyring:
    """The keyring of ``path`` (a file or a directory of PEM files); raises :class:`SigningKeyError`."""
    return Keyring(path)
