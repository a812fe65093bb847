"""The plugin's settings: flags, then environment, then the versioned config file, then defaults.

The convention is the extender's too (:mod:`kube_vgpu_cli.options`, which does the loading): every setting
has a flag (``--device-list-strategy``), an environment variable (``KUBE_VGPU_PLUGIN_DEVICE_LIST_STRATEGY``;
the older ``KUBE_VGPU_DEVICE_LIST_STRATEGY`` and the older plugins' names, ``_SEED_ENV`` below, are read too)
and a camelCase key in the config file (``deviceListStrategy``). The file carries ``version: v1`` and may hold
per-node overrides under ``nodeConfig`` (a list of ``{name: <node>, ...}``, matched by node name, or
``{matchLabels: {<label>: <value>}, ...}``, matched by the Node's labels and applied before named entries, as
gpu-manager's). Validation happens once; a bad value raises :class:`ConfigError` naming the flag, where it
came from and the value.

The same ``--config-file`` / ``CONFIG_FILE`` may instead hold NVIDIA's device-plugin config (also
``version: v1``): a file with NVIDIA's top-level keys (``flags``, ``sharing``, ...) is read as NVIDIA's
(:mod:`plugin.core.nvconfig`, docs/nvidia-plugin.md); its ``flags`` become settings (below env and flags, as
the kube-vgpu file's keys) and :func:`load_nvidia_config` gives its sharing section to the agent.
"""

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kube_vgpu_cli.logs import LogFormat, LogLevel
from kube_vgpu_cli.options import CONFIG_VERSION, Cli, FileValues, Sources
from plugin.core.allocate import DeviceIdStrategy, DeviceListStrategy
from plugin.core.dra import FrontEnd
from plugin.core.errors import ConfigError, shown
from plugin.core.health import DEFAULT_IGNORED_XIDS
from plugin.core.mig import MigStrategy
from plugin.core.nvconfig import NvidiaConfig, is_nvidia_config, parse_nvidia_config
from plugin.core.resourceslice import UnhealthyPolicy
from vcuda.names import DEFAULT_DOMAIN, HOST_STATE_DIR

__all__ = [
    "CLI",
    "CONFIG_VERSION",
    "Settings",
    "has_label_entries",
    "load_nvidia_config",
    "load_settings",
    "parse_args",
]

# NVIDIA's plugin's list strategies (seed 002) -> ours.
_SEED_LIST_STRATEGIES: Final = {"cdi-annotations": "cdi", "cdi-cri": "cdi"}


class Settings(BaseModel):
    """One node's plugin configuration, validated once at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    node_name: str = Field(min_length=1)
    """This node's name (downward API ``spec.nodeName``); pods and the Node object are found by it."""
    resource_domain: str = DEFAULT_DOMAIN
    """Domain of resources, annotations and labels; ``nvidia.com`` matches gpu-manager's names (seed 001)."""
    device_plugin_dir: Path = Path("/var/lib/kubelet/device-plugins")
    """The kubelet's device-plugin directory (``kubelet.sock`` lives there; our socket goes there too)."""
    pod_resources_socket: Path = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    """The kubelet's PodResources socket, asked once per PreStartContainer to verify attribution."""
    device_list_strategy: DeviceListStrategy = DeviceListStrategy.ENVVAR
    """How containers get their GPUs: ``envvar`` (NVIDIA_VISIBLE_DEVICES, for the nvidia container runtime,
    the most common install), ``cdi`` (CDI device names) or ``device-specs`` (device nodes and driver files
    mounted by the kubelet). NVIDIA's ``cdi-annotations`` and ``cdi-cri`` mean ``cdi``."""
    device_id_strategy: DeviceIdStrategy = DeviceIdStrategy.UUID
    """How GPUs are named to the runtime; UUIDs are stable across reboots and driver reloads, indexes are
    not."""
    cdi_prefix: str = "kube-vgpu.io/gpu"
    """CDI ``vendor/class`` of the devices in our spec file; our own so it never clashes with NVIDIA's. A
    bare vendor (the seed's ``micro.device``) means ``<vendor>/gpu``."""
    cdi_dir: Path = Path("/var/run/cdi")
    """Where CDI-enabled runtimes look for spec files."""
    cdi_spec_version: Literal["0.5.0", "0.6.0", "0.7.0"] = "0.5.0"
    """``cdiVersion`` of the spec files: 0.5.0 is read by every CDI-enabled containerd (1.7+) and CRI-O."""
    nvidia_driver_root: Path = Path("/")
    """Where the plugin sees the driver's files (the chart mounts the host's driver root at /driver-root)."""
    nvidia_driver_host_root: Path | None = None
    """The same directory as the host sees it (mount sources must be host paths); default: the driver root."""
    fail_on_init_error: bool = True
    """Exit when NVML fails, so the DaemonSet shows the problem instead of a node silently without GPUs."""
    config_file: Path | None = None
    """The versioned YAML config file (a ConfigMap in the chart)."""
    assignment_key_file: Path = Path("/etc/kube-vgpu/assignment-keys")
    """The extender's Ed25519 *public* key(s): a PEM file or a directory of them (the chart's ConfigMap, two
    keys during a rotation). Assignments that do not verify with one of them are never honoured; a private
    key here is refused, since a node must not be able to sign."""
    state_dir: Path = Path(HOST_STATE_DIR)
    """Host directory for per-container shim configs and usage files (mounted at the same path)."""
    shim_dir: Path = Path("/usr/local/kube-vgpu")
    """Host directory where the init container installed ``lib/libvcuda.so``."""
    device_memory_scaling: float = Field(default=1.0, gt=0.0, le=1.0)
    """Share of each GPU's memory that is schedulable (seed 001 ``deviceMemoryScaling``, 0 < s <= 1)."""
    ignored_xids: frozenset[int] = DEFAULT_IGNORED_XIDS
    """Application XIDs (a program's own fault) that must not take a GPU out of service."""
    xid_recovery_seconds: float = Field(default=0.0, ge=0.0)
    """After a critical XID a reachable GPU returns after this long; 0 keeps it out until restart."""
    health_probe_seconds: float = Field(default=0.5, gt=0.0, le=60.0)
    """Reachability probe period; 0.5 s keeps a lost GPU's health change under the 1 s goal."""
    reclaim_interval_seconds: float = Field(default=60.0, gt=0.0)
    """How often per-container files of deleted pods are looked for."""
    reclaim_grace_seconds: float = Field(default=300.0, ge=0.0)
    """Files younger than this are never reclaimed (a pod mid-admission is not yet listed anywhere)."""
    node_resync_seconds: float = Field(default=30.0, gt=0.0)
    """The Node is watched (a drift of ``vcuda-memory``, inventory or labels is re-patched as it happens: the
    kubelet may reset unknown extended resources when it re-creates its Node); this is the re-read period
    used only while that watch is down."""
    gfd_coexistence: bool = False
    """Write none of the labels NVIDIA's GPU feature discovery writes (``nvidia.com/gpu.*``, ``cuda.*``,
    ``mig.*``): on where GFD runs (the GPU Operator), so that two writers never fight over them."""
    # MIG (docs/mig.md, plugin.mig). MIG-enabled GPUs are never shared through the shim.
    mig_strategy: MigStrategy = MigStrategy.NONE
    """How MIG instances are advertised (as NVIDIA's plugin): ``none`` keeps them out, so that nothing the
    cluster did not ask for appears; ``single`` (one profile, ``<domain>/gpu``); ``mixed`` (``mig-<p>``)."""
    enable_mig: bool = False
    """Partition MIG-capable GPUs at start-up (seed env ``ENABLE_MIG``); off because it reconfigures GPUs."""
    mig_profile: str = ""
    """Profile to create (``MIG_PROFILE``); empty: each GPU's ``3g`` profile (the seed's A100 ``3g.20gb``)."""
    mig_instance_count: int = Field(default=0, ge=0)
    """Instances of the profile per GPU (``MIG_INSTANCE_COUNT``); 0 = as many as fit, as in the seed."""
    skip_configured: bool = True
    """Leave GPUs that already have MIG instances alone (``SKIP_CONFIGURED``): never disturb a set-up node."""
    mig_rediscover_seconds: float = Field(default=60.0, ge=0.0)
    """How often MIG modes and instances are looked at again on a node with MIG-capable GPUs; a change makes
    the plugin exit (code 4) so that the DaemonSet starts it on the new layout. 0 disables the check."""
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    """Port of the Prometheus exporter (``plugin.metrics``); 0 disables it."""
    # Watchdog (plugin.watchdog, docs/security.md): NVML's per-process memory against the shims.
    watchdog_interval_seconds: float = Field(default=10.0, ge=0.0)
    """How often NVML's processes are compared with the shims' reports; a violation must be seen in two
    rounds in a row, so it is reported 10-20 s after it starts. 0 disables the watchdog."""
    watchdog_context_overhead_mib: int = Field(default=512, ge=0)
    """Memory NVML shows per process beyond what the shim counts (the CUDA context, about 300-500 MiB on
    current GPUs): a container is over its limit only past limit + this per process."""
    watchdog_evict: bool = False
    """Evict (Eviction API, so PodDisruptionBudgets apply) a kube-vgpu pod with a confirmed violation; off
    because an event and a counter are enough for most clusters and eviction kills work."""
    health_port: int = Field(default=0, ge=0, le=65535)
    """Port of ``/healthz`` (liveness) and ``/readyz`` (registered with the kubelet), ``plugin.probes``;
    apart from the exporter so that probes work without metrics. 0 (off) by default, so that several plugins
    on one host never collide; the chart passes 9401 for its probes."""
    # Front end (docs/dra.md "Node side"): device plugin + extender, or the DRA driver. One per node.
    front_end: FrontEnd = FrontEnd.DEVICE_PLUGIN
    """How this node's GPUs are sold: ``device-plugin`` (``vcuda-core`` shares placed by the extender) or
    ``dra`` (ResourceClaims of the ``kube-vgpu.<domain>`` DRA driver, allocated by the kube-scheduler from
    ResourceSlices; Kubernetes 1.34+). Never both on one node, so that no GPU is sold twice: in ``dra`` mode
    no device plugin registers and the inventory lists the GPUs under ``other`` with mode ``dra``."""
    dra_registry_dir: Path = Path("/var/lib/kubelet/plugins_registry")
    """The kubelet's plugin-registration directory, where the DRA driver's registration socket goes."""
    dra_plugins_dir: Path = Path("/var/lib/kubelet/plugins")
    """The kubelet's plugins directory; the DRA service socket is ``<dir>/<driver>/dra.sock``."""
    dra_unhealthy: UnhealthyPolicy = UnhealthyPolicy.TAINT
    """DRA: how an unhealthy GPU shows in the node's ResourceSlice. ``taint``: kept, with a ``NoSchedule``
    device taint (running claims keep it, new ones avoid it; device taints are on by default from 1.36).
    ``withdraw``: left out of the slice, for 1.34 and 1.35, where the API server drops taints it does not
    serve (the GPU would look healthy)."""
    log_level: LogLevel = "info"
    """Logging threshold."""
    log_format: LogFormat = LogFormat.TEXT
    """``text`` for people, ``json`` (one object per line, with the structured fields) for log pipelines."""
    # NVIDIA's plugin's modes (docs/nvidia-plugin.md): nvidia.com/gpu whole, time-sliced or MPS-shared.
    mps_root: Path | None = None
    """Host directory of the MPS daemons' pipe and log directories (NVIDIA's ``mpsRoot``), one
    subdirectory per GPU; default: ``<state-dir>/mps``, mounted at the same path."""
    mps_shm_size: str = Field("", pattern=r"^([0-9]{1,15}[kmg]?|[0-9]{1,3}%)?$")
    """Size of the tmpfs the plugin mounts at ``<mps-root>/shm``, the MPS daemons' and clients' ``/dev/shm``
    (tmpfs ``size=``: ``8g``, ``50%``); empty: half the node's memory, NVIDIA's default."""
    mps_control_path: Path | None = None
    """The ``nvidia-cuda-mps-control`` binary the plugin runs for MPS-shared GPUs; default:
    ``<nvidia-driver-root>/usr/bin/nvidia-cuda-mps-control`` (the driver's own copy)."""
    uninstall: bool = False
    """Remove everything the plugin published on its Node (vcuda-memory, inventory, labels), then exit."""

    @field_validator("resource_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not value or "/" in value or value.endswith("kubernetes.io") or "." not in value:
            raise ValueError("must be a DNS domain such as nvidia.com (not kubernetes.io)")
        return value

    @field_validator("device_list_strategy", mode="before")
    @classmethod
    def _seed_strategy(cls, value: object) -> object:
        return _SEED_LIST_STRATEGIES.get(value, value) if isinstance(value, str) else value

    @field_validator("cdi_prefix", mode="before")
    @classmethod
    def _bare_vendor(cls, value: object) -> object:
        return f"{value}/gpu" if isinstance(value, str) and "." in value and "/" not in value else value

    @field_validator("cdi_prefix")
    @classmethod
    def _cdi(cls, value: str) -> str:
        vendor, sep, kind = value.partition("/")
        if not sep or not vendor or not kind or "=" in value:
            raise ValueError("must be a CDI kind 'vendor.com/class'")
        return value

    @property
    def driver_host_root(self) -> Path:
        return self.nvidia_driver_host_root or self.nvidia_driver_root

    @property
    def mps_dir(self) -> Path:
        return self.mps_root or self.state_dir / "mps"

    @property
    def mps_control(self) -> Path:
        return self.mps_control_path or self.nvidia_driver_root / "usr/bin/nvidia-cuda-mps-control"


# The seeds' environment names: the micro GPU plugin's (000) and NVIDIA's plugin's (002). Below the
# KUBE_VGPU_PLUGIN_ names; CDI_ENABLED and PASS_DEVICE_SPECS choose a list strategy (_from_env).
_SEED_ENV: Final = {
    "NODE_NAME": "node_name",
    "CDI_PREFIX": "cdi_prefix",
    "ENABLE_MIG": "enable_mig",
    "MIG_PROFILE": "mig_profile",
    "MIG_INSTANCE_COUNT": "mig_instance_count",
    "SKIP_CONFIGURED": "skip_configured",
    "MIG_STRATEGY": "mig_strategy",
    "FAIL_ON_INIT_ERROR": "fail_on_init_error",
    "DEVICE_LIST_STRATEGY": "device_list_strategy",
    "DEVICE_ID_STRATEGY": "device_id_strategy",
    "NVIDIA_DRIVER_ROOT": "nvidia_driver_root",
    "CONFIG_FILE": "config_file",
}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
CLI: Final = Cli(
    model=Settings,
    prog="kube-vgpu-plugin",
    description="kube-vgpu node agent: the device plugin of nvidia.com/vcuda-core and vcuda-memory.",
    env_prefix="KUBE_VGPU_PLUGIN_",
    error=ConfigError,
    legacy_env_prefixes=("KUBE_VGPU_",),
    env_aliases=_SEED_ENV,
    not_in_file=frozenset({"config_file", "uninstall"}),
    epilog=(
        "Precedence: flags > environment > config file (nodeConfig entries over its top level) > defaults. "
        "Environment: KUBE_VGPU_PLUGIN_<SETTING>; KUBE_VGPU_<SETTING> and the seeds' names ("
        + ", ".join([*_SEED_ENV, "CDI_ENABLED", "PASS_DEVICE_SPECS"])
        + ") are read too. Config-file keys are camelCase, under version: v1. Docs: docs/plugin.md."
    ),
)
_NODE_IGNORED: Final = frozenset({"containerRuntimeEndpoint", "cgroupDriver"})


def parse_args(argv: Sequence[str] | None) -> dict[str, Any]:
    """Only the flags given (``None`` defaults), so precedence can tell them apart from defaults."""
    return CLI.parse_flags(argv)


def _sources(argv: Sequence[str] | None, env: Mapping[str, str]) -> Sources:
    """Flags and variables; NVIDIA's ``CDI_ENABLED`` / ``PASS_DEVICE_SPECS`` choose a list strategy."""
    sources = CLI.sources(argv, env)
    found, origin = dict(sources.env), dict(sources.variables)
    for variable, strategy in (
        ("CDI_ENABLED", DeviceListStrategy.CDI),
        ("PASS_DEVICE_SPECS", DeviceListStrategy.DEVICE_SPECS),
    ):
        if env.get(variable, "").lower() in _TRUE and "device_list_strategy" not in found:
            found["device_list_strategy"], origin["device_list_strategy"] = strategy.value, variable
    return dataclasses.replace(sources, env=found, variables=origin)


def load_nvidia_config(path: Path | None) -> NvidiaConfig | None:
    """NVIDIA's config when ``path`` holds one (None for kube-vgpu's own file or none); raises
    :class:`ConfigError` naming the file and the key."""
    if path is None:
        return None
    doc = CLI.read_file(path)
    if not is_nvidia_config(doc):
        return None
    try:
        return parse_nvidia_config(doc)
    except ConfigError as err:
        raise ConfigError(f"config file {path} (NVIDIA's format): {err}") from err


def _from_file(path: Path, node_name: str | None, node_labels: Mapping[str, str] | None = None) -> FileValues:
    doc = CLI.read_file(path)
    nvidia = load_nvidia_config(path) if is_nvidia_config(doc) else None
    if nvidia is not None:
        return FileValues().update(nvidia.settings, f"config file {path} (NVIDIA's format)")
    CLI.check_version(doc, path)
    values = CLI.file_keys(doc, f"config file {path}", frozenset({"version", "nodeConfig"}))
    for entry in _matching_entries(_node_entries(doc.get("nodeConfig"), path), node_name, node_labels):
        where = f"config file {path} nodeConfig[{shown(entry.get('name') or entry['matchLabels'])}]"
        node = CLI.file_keys(entry, where, frozenset({"name", "matchLabels"}) | _NODE_IGNORED)
        values = values.update(node.values, where)
    return values


def _matching_entries(
    entries: list[dict[str, Any]], node_name: str | None, labels: Mapping[str, str] | None
) -> list[dict[str, Any]]:
    """Entries for this node: by labels first (file order), then by name; one with both needs both."""

    def fits(entry: dict[str, Any]) -> bool:
        wanted = entry.get("matchLabels") or {}
        by_labels = labels is not None and all(labels.get(k) == v for k, v in wanted.items())
        return ("name" not in entry or entry["name"] == node_name) and (not wanted or by_labels)

    return sorted((e for e in entries if fits(e)), key=lambda e: "name" in e)


def has_label_entries(path: Path | None) -> bool:
    """Whether the config file has ``nodeConfig`` entries matched by node labels (so they must be read)."""
    if path is None:
        return False
    try:
        doc = CLI.read_file(path)
    except ConfigError:
        return False  # load_settings already reported it
    entries = doc.get("nodeConfig")
    return isinstance(entries, list) and any(isinstance(e, dict) and "matchLabels" in e for e in entries)


def _node_entries(raw: object, path: Path) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(e, dict) and _selects(e) for e in raw):
        raise ConfigError(
            f"config file {path}: nodeConfig must be a list of mappings with a 'name' or "
            "'matchLabels' (a mapping of label names to string values)"
        )
    return raw


def _selects(entry: dict[str, Any]) -> bool:
    labels = entry.get("matchLabels")
    if labels is None:
        return "name" in entry
    return isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())


def load_settings(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    node_labels: Mapping[str, str] | None = None,
) -> Settings:
    """Flags > env > config file (node override > file) > defaults; raises :class:`ConfigError`."""
    sources = _sources(argv, os.environ if env is None else env)
    config_file = sources.given("config_file")
    node_name = sources.given("node_name")
    from_file = _from_file(Path(config_file), node_name, node_labels) if config_file else FileValues()
    settings = CLI.settle(sources, from_file)
    if settings.front_end is FrontEnd.DRA and load_nvidia_config(settings.config_file) is not None:
        # One GPU, one mode: a DRA node sells every GPU as claims; NVIDIA's modes would sell them twice.
        raise ConfigError(
            f"config file {settings.config_file}: NVIDIA's format cannot be used with --front-end=dra"
        )
    return settings
