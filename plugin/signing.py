"""The plugin's verify-only keyring: Ed25519 public keys, never a private one.

A node holds only public keys (a ConfigMap the DaemonSet mounts), so a compromised node cannot forge an
assignment for any other node or pod. The key files are re-read (at most every ``reload_s``) when an
assignment names a key ID the ring does not know, so a rotation's new key is picked up without a restart
(docs/security.md, "Key rotation"). Twin of ``extender.signing``'s verifying half: the extender and the
plugin never import each other, and both read key files through :mod:`kube_vgpu_cli.keyfiles`.
"""

import logging
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kube_vgpu_cli.keyfiles import SigningKeyError, public_key_id, public_keys, verify_with

__all__ = ["Keyring", "SigningKeyError", "load_keyring"]

log = logging.getLogger(__name__)


def _load(path: Path) -> dict[str, Ed25519PublicKey]:
    return {public_key_id(key): key for key in public_keys(path, refuse_private=True)}


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
        return verify_with(self._keys.get(key_id) or self._reloaded(key_id), payload, signature)

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
