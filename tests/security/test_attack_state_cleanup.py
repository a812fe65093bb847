"""Attack: make the node agent (root) delete files outside the state directory at its start.

Threat: a tenant, who writes its container's usage directory and its own node-record directory, both bind
mounts of directories under the agent's state directory. The agent's start-up removes leftover ``*.tmp`` files
of its own atomic writes. It used to find them with ``rglob`` over the whole state directory, walking into every
tenant-writable directory by path: a tenant swapping one of its subdirectories for a symlink (to
``/var/run/cdi``, the device-plugin directory, anything the agent mounts) between the walk's ``is_symlink``
check and its ``scandir`` had root delete ``*.tmp`` files there (a time-of-check/time-of-use race). Now the
clean-up looks only where the agent's own writes leave temporaries, at fixed depths, and never walks into a
directory a tenant writes; a tenant's files, whatever their names, are left alone.
"""

from pathlib import Path

from plugin.core.allocate import NODE_DIR_NAME
from plugin.statedir import StateDir
from vcuda.shimfile import NODE_TENANTS_DIR


def test_start_up_clean_up_never_walks_into_tenant_writable_directories(tmp_path: Path) -> None:
    root = tmp_path / "state"
    first = StateDir(root)
    first.prepare()
    usage = root / "containers" / "pod_c" / "usage"
    records = root / NODE_DIR_NAME / NODE_TENANTS_DIR / "pod_c"
    usage.mkdir(parents=True)
    records.mkdir(parents=True)
    tenant_files = [usage / "deep" / "keep.tmp", records / "deep" / "keep.tmp", records / "keep.tmp"]
    for path in tenant_files:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"tenant")
    own = [
        root / "ld.so.preload.tmp",
        root / "containers" / "pod_c" / "vcuda.config.tmp",
        root / NODE_DIR_NAME / "placed" / "GPU-1.tmp",
        usage / ".usage.bin.abc123.tmp",
    ]
    for path in own:
        path.write_bytes(b"leftover")

    StateDir(root).prepare()

    assert [p for p in tenant_files if not p.exists()] == [], "a tenant directory was walked"
    assert [p for p in own if p.exists()] == [], "the agent's own leftovers are still removed"
