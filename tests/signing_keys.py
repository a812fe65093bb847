"""Fixed Ed25519 test keys, the way the chart and the extender use them (a private key for the extender, PEM
public keys or certificates for the plugin), and helpers to sign assignments for a pod body."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extender.signing import Ed25519Signer, Keyring
from vcuda.annotations import decode_assignment, encode_assignment
from vcuda.model import PodAssignment
from vcuda.names import Names
from vcuda.signing import pod_binding

__all__ = [
    "KEYRING",
    "OTHER_PRIVATE",
    "OTHER_SIGNER",
    "PRIVATE",
    "SIGNER",
    "decode_for",
    "private_pem",
    "public_pem",
    "sign_for",
    "write_private_key",
    "write_public_key",
]

PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SIGNER = Ed25519Signer(PRIVATE)
"""The cluster's assignment key in every test (the extender's Secret)."""
OTHER_PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
OTHER_SIGNER = Ed25519Signer(OTHER_PRIVATE)
"""A key kube-vgpu does not trust (an attacker's, or a retired one)."""
KEYRING = Keyring([SIGNER.public])


def private_pem(key: Ed25519PrivateKey = PRIVATE) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(signer: Ed25519Signer = SIGNER) -> bytes:
    return signer.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_private_key(path: Path, key: Ed25519PrivateKey = PRIVATE) -> Path:
    path.write_bytes(private_pem(key))
    return path


def write_public_key(path: Path, signer: Ed25519Signer = SIGNER) -> Path:
    path.write_bytes(public_pem(signer))
    return path


def sign_for(
    pod: Mapping[str, Any], assignment: PodAssignment, names: Names, signer: Ed25519Signer = SIGNER
) -> str:
    """The annotation the extender would write on ``pod`` (its metadata and GPU request as they are now)."""
    return encode_assignment(assignment, pod_binding(pod, names), signer)


def decode_for(pod: Mapping[str, Any], names: Names, keyring: Keyring = KEYRING) -> PodAssignment:
    """The verified assignment on ``pod`` (raises like the extender and plugin refuse)."""
    return decode_assignment(
        pod["metadata"]["annotations"][names.assignment], pod_binding(pod, names), keyring
    )
