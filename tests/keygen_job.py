"""The chart's assignment-key Job (``kube-vgpu-extender keygen``, a pre-install/pre-upgrade hook), run as the
kubelet would run it but as a local process call: its rendered ``args`` through the real entry point
(``extender.__main__.main``), its ConfigMap mounts written from the rendered objects into a local directory,
and ``--kubeconfig`` pointing at a test API server (kmock, or the real one of tests/k8s)."""

from pathlib import Path
from typing import Any

__all__ = ["keygen_container", "kubeconfig_for", "run_keygen_job"]

Obj = dict[str, Any]
JOB_SUFFIX = "-assignment-keygen"


def keygen_container(objects: list[Obj]) -> tuple[Obj, Obj]:
    """The rendered Job's pod spec and its one container."""
    jobs = [o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].endswith(JOB_SUFFIX)]
    assert len(jobs) == 1, f"the chart renders {len(jobs)} keygen Jobs"
    pod: Obj = jobs[0]["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def kubeconfig_for(url: str, path: Path, token: str = "") -> Path:
    import yaml

    user = {"token": token} if token else {}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def local_args(objects: list[Obj], root: Path) -> list[str]:
    """The Job's args with each ConfigMap mount replaced by a local copy of the rendered ConfigMap."""
    pod, container = keygen_container(objects)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        name = volumes[mount["name"]]["configMap"]["name"]
        data = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)["data"]
        local = root / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        for file, text in data.items():
            (local / file).write_text(text)
        mounts[mount["mountPath"]] = local
    args = []
    for arg in container["args"]:
        for path, local in mounts.items():
            arg = arg.replace(f"={path}", f"={local}")
        args.append(arg)
    return args


def run_keygen_job(objects: list[Obj], kubeconfig: Path, root: Path) -> int:
    from extender.__main__ import main

    return main([*local_args(objects, root), f"--kubeconfig={kubeconfig}"])
