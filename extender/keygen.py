"""``kube-vgpu-extender keygen``: makes the assignment signing key pair ONCE, in the cluster (the chart's
pre-install/pre-upgrade hook Job), so that no render of the chart ever holds or changes key material.

- The Secret exists: its private key is kept as it is; only the public-key ConfigMap is (re)written from it.
- It does not: a fresh Ed25519 key is created in it; a 409 (another run created it first) re-reads the
  Secret and uses the winner's key, so concurrent runs agree on one key.
- The public-key ConfigMap (``--public-configmap``) holds ``signing.pem`` (its PUBLIC KEY PEM) plus every
  ``*.pem`` file of ``--extra-public-keys`` (the old key during a rotation). It carries
  ``helm.sh/resource-policy: keep``, so that an upgrade from a chart that rendered it does not delete it.
"""

import argparse
import base64
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = ["KeygenError", "ensure_keys", "main", "public_pem"]

log = logging.getLogger("extender.keygen")
SIGNING_FILE = "signing.pem"
KEEP = {"helm.sh/resource-policy": "keep"}


class KeygenError(Exception):
    """The Secret holds no usable Ed25519 private key, or the API server refused a request."""


def new_private_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(private_pem: bytes) -> str:
    """The PUBLIC KEY PEM of an Ed25519 PKCS#8 private key PEM."""
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as err:
        raise KeygenError(
            f"the Secret's key is not a PEM private key ({err}); an older chart's HMAC key? Delete the"
            " Secret and run the install or upgrade again to have a new Ed25519 key made"
        ) from err
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeygenError(f"the Secret's key is {type(key).__name__}, not Ed25519")
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _read_private(core: Any, namespace: str, name: str, field: str) -> bytes | None:
    from kubernetes.client.exceptions import ApiException

    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    value = (secret.data or {}).get(field)
    if value is None:
        raise KeygenError(f"Secret {namespace}/{name} has no key {field!r}")
    return base64.b64decode(value)


def _ensure_private(core: Any, namespace: str, name: str, field: str, labels: Mapping[str, str]) -> bytes:
    from kubernetes.client.exceptions import ApiException

    existing = _read_private(core, namespace, name, field)
    if existing is not None:
        log.info("keeping the existing signing key", extra={"secret": f"{namespace}/{name}"})
        return existing
    pem = new_private_pem()
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "annotations": KEEP},
        "type": "Opaque",
        "data": {field: base64.b64encode(pem).decode()},
    }
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as err:
        if err.status != 409:
            raise
        winner = _read_private(core, namespace, name, field)  # created concurrently: the winner's key counts
        if winner is None:
            raise KeygenError(f"Secret {namespace}/{name}: 409 on create, then not found") from err
        return winner
    log.info("created a new signing key", extra={"secret": f"{namespace}/{name}"})
    return pem


def _write_public(
    core: Any, namespace: str, name: str, data: Mapping[str, str], labels: Mapping[str, str]
) -> None:
    from kubernetes.client.exceptions import ApiException

    meta = {"name": name, "namespace": namespace, "labels": dict(labels), "annotations": KEEP}
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}
    try:
        core.read_namespaced_config_map(name, namespace)
    except ApiException as err:
        if err.status != 404:
            raise
        try:
            core.create_namespaced_config_map(namespace, body)
            return
        except ApiException as created:
            if created.status != 409:
                raise
    core.replace_namespaced_config_map(name, namespace, body)  # no resourceVersion: replaces as a whole


def extra_public_keys(directory: Path | None) -> dict[str, str]:
    """``name.pem: PEM`` for every ``*.pem`` file of ``directory`` (a mounted ConfigMap's files)."""
    if directory is None:
        return {}
    return {p.name: p.read_text() for p in sorted(directory.glob("*.pem")) if p.name != SIGNING_FILE}


def ensure_keys(
    core: Any,
    namespace: str,
    secret: str,
    field: str = "key",
    public_configmap: str | None = None,
    extra: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Makes sure the Secret holds a private key (kept if present) and the ConfigMap its public key."""
    private = _ensure_private(core, namespace, secret, field, labels or {})
    public = public_pem(private)
    if public_configmap:
        _write_public(
            core, namespace, public_configmap, {**(extra or {}), SIGNING_FILE: public}, labels or {}
        )
    return public


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kube-vgpu-extender keygen", description=__doc__.split("\n\n")[0])
    p.add_argument("--namespace", required=True)
    p.add_argument("--secret", required=True, help="the Secret that holds the private key")
    p.add_argument("--secret-key", default="key", help="the key inside the Secret")
    p.add_argument("--public-configmap", default="", help="the ConfigMap of public keys to (re)write")
    p.add_argument(
        "--extra-public-keys", type=Path, default=None, help="a directory of more *.pem public keys"
    )
    p.add_argument("--label", action="append", default=[], help="k=v label for what is created")
    p.add_argument("--kubeconfig", type=Path, default=None)
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


def _core(kubeconfig: Path | None) -> Any:
    from kubernetes import client, config

    if kubeconfig is not None:
        api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    else:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        api = client.ApiClient(configuration)
    return client.CoreV1Api(api)


def main(argv: Sequence[str]) -> int:
    from kubernetes.client.exceptions import ApiException

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    labels = dict(label.split("=", 1) for label in args.label if "=" in label)
    try:
        extra = extra_public_keys(args.extra_public_keys)
        ensure_keys(
            _core(args.kubeconfig), args.namespace, args.secret, args.secret_key,
            args.public_configmap or None, extra, labels,
        )  # fmt: skip
    except (KeygenError, OSError) as err:
        print(f"kube-vgpu-extender keygen: {err}", file=sys.stderr)
        return 1
    except ApiException as err:
        print(f"kube-vgpu-extender keygen: API server: {err.status} {err.reason}", file=sys.stderr)
        return 1
    return 0
