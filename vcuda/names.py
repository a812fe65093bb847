"""Every name two components must agree on: resources, annotations, labels, env variables and paths.

The resource domain is configurable (default ``nvidia.com``); annotation and label keys live in the same
domain so that one setting moves them all. Standard library only.
"""

from dataclasses import dataclass
from typing import Final

__all__ = [
    "CONTAINER_CONFIG_PATH",
    "CONTAINER_NODE_DIR",
    "CONTAINER_SHIM_PATH",
    "CONTAINER_USAGE_DIR",
    "DEFAULT_DOMAIN",
    "ENV_CONFIG_PATH",
    "ENV_CONTAINER_NAME",
    "ENV_LOG_LEVEL",
    "ENV_NODE_DIR",
    "ENV_NAMESPACE",
    "ENV_POD_NAME",
    "ENV_POD_UID",
    "ENV_USAGE_PATH",
    "HOST_STATE_DIR",
    "LD_SO_PRELOAD_PATH",
    "NVIDIA_GPU_RESOURCE",
    "TRANSLATION_ENABLED",
    "USAGE_FILE_NAME",
    "Names",
]

DEFAULT_DOMAIN: Final = "nvidia.com"

# NVIDIA's device plugin's whole-GPU resource: always this name, whatever kube-vgpu's domain (stock charts ask
# for it). In a namespace labelled ``Names.translation=enabled`` the webhook rewrites it to vcuda-core.
NVIDIA_GPU_RESOURCE: Final = "nvidia.com/gpu"
TRANSLATION_ENABLED: Final = "enabled"

# Paths inside every GPU container (mounted by the plugin's Allocate answer).
CONTAINER_CONFIG_PATH: Final = "/etc/kube-vgpu/vcuda.config"
CONTAINER_USAGE_DIR: Final = "/var/run/kube-vgpu"
CONTAINER_SHIM_PATH: Final = "/usr/local/kube-vgpu/lib/libvcuda.so"
LD_SO_PRELOAD_PATH: Final = "/etc/ld.so.preload"
USAGE_FILE_NAME: Final = "usage.bin"
# Node-wide directory shared read-write by every GPU container of the node (one host directory): the shims
# of all tenants of a GPU publish their busy intervals in `<dir>/<gpu-uuid>.bin` (layout vcuda.shimfile
# NODE_FILE) so each can split time-sliced overlap. Optional: without it each shim runs as a lone tenant.
CONTAINER_NODE_DIR: Final = "/var/run/kube-vgpu-node"

# Paths on the node, owned by the plugin.
HOST_STATE_DIR: Final = "/var/lib/kube-vgpu"

# Env variables of the shim. The three path overrides (config, usage, node dir) are read only by the TEST
# build (libvcuda-test.so, -DVCUDA_TEST_BUILD); the shipped libvcuda.so ignores them (docs/security.md).
ENV_CONFIG_PATH: Final = "VCUDA_CONFIG_PATH"
ENV_USAGE_PATH: Final = "VCUDA_USAGE_PATH"
ENV_LOG_LEVEL: Final = "VCUDA_LOG_LEVEL"
ENV_NODE_DIR: Final = "VCUDA_NODE_DIR"

# Identity env variables set on every GPU container.
ENV_POD_NAME: Final = "KUBE_VGPU_POD_NAME"
ENV_NAMESPACE: Final = "KUBE_VGPU_POD_NAMESPACE"
ENV_POD_UID: Final = "KUBE_VGPU_POD_UID"
ENV_CONTAINER_NAME: Final = "KUBE_VGPU_CONTAINER_NAME"


@dataclass(frozen=True, slots=True)
class Names:
    """Resource, annotation and label keys for one resource domain."""

    domain: str = DEFAULT_DOMAIN

    # --- resources ---
    @property
    def core(self) -> str:
        """Compute share: 100 per physical GPU."""
        return f"{self.domain}/vcuda-core"

    @property
    def memory(self) -> str:
        """GPU memory in MiB on each GPU the container uses."""
        return f"{self.domain}/vcuda-memory"

    # --- user-facing pod annotations ---
    @property
    def core_limit(self) -> str:
        """Soft (elastic) compute limit in percent, >= the request."""
        return f"{self.domain}/vcuda-core-limit"

    @property
    def include_models(self) -> str:
        """Comma-separated GPU model substrings the pod accepts (case-insensitive)."""
        return f"{self.domain}/vgpu-include-models"

    @property
    def exclude_models(self) -> str:
        return f"{self.domain}/vgpu-exclude-models"

    @property
    def include_uuids(self) -> str:
        """Comma-separated GPU UUIDs the pod may use."""
        return f"{self.domain}/vgpu-include-uuids"

    @property
    def exclude_uuids(self) -> str:
        return f"{self.domain}/vgpu-exclude-uuids"

    @property
    def gpu_policy(self) -> str:
        """Per-pod override of the GPU placement policy: ``binpack`` or ``spread``."""
        return f"{self.domain}/vgpu-gpu-policy"

    @property
    def node_policy(self) -> str:
        """Per-pod override of the node placement policy: ``binpack`` or ``spread``."""
        return f"{self.domain}/vgpu-node-policy"

    # --- internal annotations (only the extender and the plugin write these) ---
    @property
    def assignment(self) -> str:
        """Pod: the extender's signed per-container decision (versioned JSON)."""
        return f"{self.domain}/vgpu-assignment"

    @property
    def status(self) -> str:
        """Pod: the plugin's allocation phase and timestamps (versioned JSON)."""
        return f"{self.domain}/vgpu-status"

    @property
    def inventory(self) -> str:
        """Node: the plugin's GPU inventory and topology (versioned JSON)."""
        return f"{self.domain}/vgpu-inventory"

    # --- namespace labels ---
    @property
    def translation(self) -> str:
        """Namespace label: ``enabled`` makes the mutating webhook rewrite ``nvidia.com/gpu: N`` to
        ``vcuda-core: N*100`` for the namespace's pods. Read from the API server's Namespace, never from the
        pod (a pod cannot label its namespace; it can write anything on itself)."""
        return f"{self.domain}/gpu-translation"

    # --- node labels ---
    def label(self, suffix: str) -> str:
        """A GPU node label such as ``nvidia.com/gpu.product``."""
        return f"{self.domain}/{suffix}"
