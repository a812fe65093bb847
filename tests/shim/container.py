"""Run a program with the shim's files where a GPU container has them, without changing the host.

The shipped shim reads only fixed paths (vcuda.names): its config in /etc/kube-vgpu, its usage file in
/var/run/kube-vgpu, the node's shared files in /var/run/kube-vgpu-node. `command` wraps a program so that it
runs in a private mount namespace (``unshare -m``) where those three directories are bind mounts of host
directories chosen by the test, over copy-on-write overlays of their parents (/etc and /run), as the
plugin's mounts make them in a container. Processes given the same usage directory are one container;
tenants given the same node directory share a GPU. Needs root (CAP_SYS_ADMIN) and overlayfs.
"""

import functools
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from vcuda import names

CONFIG_DIR = os.path.dirname(names.CONTAINER_CONFIG_PATH)
CONFIG_NAME = os.path.basename(names.CONTAINER_CONFIG_PATH)
USAGE_DIR = names.CONTAINER_USAGE_DIR
NODE_DIR = names.CONTAINER_NODE_DIR


@functools.cache
def available() -> bool:
    """Whether this process may build such a namespace (a probe that mounts an overlay)."""
    if shutil.which("unshare") is None:
        return False
    scratch = Path(
        subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip()
    )
    try:
        probe = command(["true"], config=scratch, usage=scratch, node=scratch, scratch=scratch / "s")
        return subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def command(args: Sequence[str], *, config: Path, usage: Path, node: Path, scratch: Path) -> list[str]:
    """`args` run with `config`, `usage` and `node` (host dirs) at the container paths; `scratch` holds overlays."""
    binds = ((config, CONFIG_DIR), (usage, USAGE_DIR), (node, NODE_DIR))
    parents = sorted({os.path.realpath(os.path.dirname(target)) for _, target in binds})
    lines = ["set -eu"]
    for i, parent in enumerate(parents):
        up, work = scratch / f"up{i}", scratch / f"work{i}"
        lines += [
            f"mkdir -p {shlex.quote(str(up))} {shlex.quote(str(work))}",
            f"mount -t overlay overlay -o lowerdir={parent},upperdir={up},workdir={work} {shlex.quote(parent)}",
        ]
    for source, target in binds:
        lines += [
            f"mkdir -p {shlex.quote(target)}",
            f"mount --bind {shlex.quote(str(source))} {shlex.quote(target)}",
        ]
    lines.append('exec "$@"')
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(lines), "sh", *args]
