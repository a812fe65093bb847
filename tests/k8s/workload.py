"""A container of the chart, run as a local process the way the kubelet would set it up.

The container's ``args`` are the chart's; each path under one of its ``volumeMounts`` is rewritten to a local
directory holding what the kubelet would mount there, read from the API server: Secrets and ConfigMaps
(``items`` honoured), an empty directory for ``emptyDir``. Its identity is the pod's ServiceAccount, or the
one a mounted ``kubernetes.io/service-account-token`` Secret names (no kube-controller-manager runs here to
fill such a Secret, so its ``token`` comes from the TokenRequest API, as a projected token would).
"""

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tests.k8s.controlplane import ControlPlane

__all__ = ["Container", "Mounter", "container_of"]

TOKEN_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_TOKEN_TYPE: Final = "kubernetes.io/service-account-token"

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Container:
    namespace: str
    pod: Obj  # the pod template's spec
    spec: Obj  # the container

    @property
    def name(self) -> str:
        return str(self.spec["name"])


def container_of(objects: list[Obj], kind: str, name: str, container: str) -> Container:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert found, f"the chart renders no {kind} {name}"
    pod = found[0]["spec"]["template"]["spec"]
    spec = next((c for c in pod["containers"] if c["name"] == container), None)
    assert spec is not None, f"{kind} {name} has no container {container}"
    return Container(found[0]["metadata"].get("namespace", "kube-system"), pod, spec)


class Mounter:
    def __init__(self, plane: ControlPlane, core: Any, root: Path) -> None:
        self.plane, self.core, self.root = plane, core, root

    def identity(self, container: Container) -> str:
        """The ServiceAccount the container's API calls run as."""
        for mount in container.spec.get("volumeMounts") or []:
            secret = self._volume(container, mount["name"]).get("secret")
            if mount["mountPath"] == TOKEN_DIR and secret:
                stored = self.core.read_namespaced_secret(secret["secretName"], container.namespace)
                if stored.type == SA_TOKEN_TYPE:
                    return str(stored.metadata.annotations["kubernetes.io/service-account.name"])
        return str(container.pod.get("serviceAccountName") or "default")

    def kubeconfig(self, container: Container, token: str) -> Path:
        return self.plane.kubeconfig(f"{container.name}-{self.identity(container)}", token=token)

    def args(self, container: Container, overrides: Mapping[str, str]) -> list[str]:
        """The chart's args: ``--flag`` values in ``overrides`` replaced, mounted paths mapped to local ones."""
        mounts = {m["mountPath"]: self._mount(container, m) for m in container.spec.get("volumeMounts") or []}
        out = []
        for arg in container.spec.get("args") or []:
            flag, eq, value = arg.partition("=")
            if flag in overrides:
                value = overrides[flag]
            else:
                for path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
                    if local is not None and (value == path or value.startswith(path + "/")):
                        value = str(local) + value[len(path) :]
                        break
            out.append(f"{flag}{eq}{value}" if eq else arg)
        return out

    def _volume(self, container: Container, name: str) -> Obj:
        volume: Obj = next(v for v in container.pod.get("volumes") or [] if v["name"] == name)
        return volume

    def _mount(self, container: Container, mount: Obj) -> Path | None:
        volume = self._volume(container, mount["name"])
        local = self.root / container.name / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            secret = self._read("secret", volume["secret"]["secretName"], container.namespace)
            data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()} if secret else {}
            return _write(local, data, volume["secret"].get("items"))
        if "configMap" in volume:
            config_map = self._read("config_map", volume["configMap"]["name"], container.namespace)
            data = {k: v.encode() for k, v in (config_map.data or {}).items()} if config_map else {}
            return _write(local, data, volume["configMap"].get("items"))
        return local if "emptyDir" in volume else None

    def _read(self, kind: str, name: str, namespace: str) -> Any:
        """The object, or None when it does not exist (an operator's, e.g. cert-manager's, Secret: the caller
        overrides the paths it would have provided)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return getattr(self.core, f"read_namespaced_{kind}")(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise


def _write(local: Path, data: Mapping[str, bytes], items: list[Obj] | None) -> Path:
    paths = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
    for key, path in paths.items():
        if key in data:
            (local / path).parent.mkdir(parents=True, exist_ok=True)
            (local / path).write_bytes(data[key])
    return local
