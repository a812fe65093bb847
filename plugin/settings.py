"""The plugin's settings: flags, then environment, then the versioned config file, then defaults.

Every setting has a flag (``--device-list-strategy``), an environment variable
(``KUBE_VGPU_DEVICE_LIST_STRATEGY``; the seed names ``NODE_NAME``, ``CDI_ENABLED`` and ``CDI_PREFIX`` work
too) and a camelCase key in the config file (``deviceListStrategy``). The file carries ``version: v1`` and
may hold per-node overrides under ``nodeConfig`` (a list of ``{name: <node>, ...}``, matched by node name,
as in seed 001). Validation happens once, here; a bad value raises :class:`ConfigError` naming the field
and where it came from.
"""

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from plugin.core.allocate import DeviceIdStrategy, DeviceListStrategy
from plugin.core.errors import ConfigError
from plugin.core.health import DEFAULT_IGNORED_XIDS
from plugin.core.mig import MigStrategy
from vcuda.names import DEFAULT_DOMAIN, HOST_STATE_DIR

__all__ = ["CONFIG_VERSION", "Settings", "load_settings", "parse_args"]

CONFIG_VERSION: Final = "v1"
_ENV_PREFIX: Final = "KUBE_VGPU_"


class Settings(BaseModel):
    """One node's plugin configuration, validated once at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_name: str = Field(min_length=1)
    """This node's name (downward API ``spec.nodeName``); pods and the Node object are found by it."""
    resource_domain: str = DEFAULT_DOMAIN
    """Domain of resources, annotations and labels; ``nvidia.com`` matches gpu-manager's names (seed 001)."""
    device_plugin_dir: Path = Path("/var/lib/kubelet/device-plugins")
    """The kubelet's device-plugin directory (``kubelet.sock`` lives there; our socket goes there too)."""
    pod_resources_socket: Path = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    """The kubelet's PodResources socket, asked once per PreStartContainer to verify attribution."""
    device_list_strategy: DeviceListStrategy = DeviceListStrategy.ENVVAR
    """``envvar`` works with the nvidia container runtime, the most common install."""
    device_id_strategy: DeviceIdStrategy = DeviceIdStrategy.UUID
    """UUIDs are stable across reboots and driver reloads; indexes are not."""
    cdi_prefix: str = "kube-vgpu.io/gpu"
    """CDI ``vendor/class`` of the devices in our spec file; our own so it never clashes with NVIDIA's."""
    cdi_dir: Path = Path("/var/run/cdi")
    """Where CDI-enabled runtimes look for spec files."""
    nvidia_driver_root: Path = Path("/")
    """Where the plugin sees the driver's files (the chart mounts the host's driver root at /driver-root)."""
    nvidia_driver_host_root: Path | None = None
    """The same directory as the host sees it (mount sources must be host paths); default: the driver root."""
    fail_on_init_error: bool = True
    """Exit when NVML fails, so the DaemonSet shows the problem instead of a node silently without GPUs."""
    config_file: Path | None = None
    """The versioned YAML config file (a ConfigMap in the chart)."""
    assignment_key_file: Path = Path("/etc/kube-vgpu/assignment-key/key")
    """HMAC key shared with the extender; assignments not signed with it are never honoured."""
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
    """How often the Node is re-read and ``vcuda-memory``, inventory and labels re-patched if they drifted
    (the kubelet may reset unknown extended resources when it re-creates its Node)."""
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
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Logging threshold."""
    uninstall: bool = False
    """Remove everything the plugin published on its Node (vcuda-memory, inventory, labels), then exit."""

    @field_validator("resource_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not value or "/" in value or value.endswith("kubernetes.io") or "." not in value:
            raise ValueError("must be a DNS domain such as nvidia.com (not kubernetes.io)")
        return value

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


_FIELDS: Final = tuple(Settings.model_fields)
_BOOL_FIELDS: Final = frozenset({"fail_on_init_error", "uninstall", "enable_mig", "skip_configured"})
# The micro GPU plugin's (seed 000) MIG env names, honoured like CDI_ENABLED / CDI_PREFIX.
_SEED_MIG_ENV: Final = {
    "ENABLE_MIG": "enable_mig",
    "MIG_PROFILE": "mig_profile",
    "MIG_INSTANCE_COUNT": "mig_instance_count",
    "SKIP_CONFIGURED": "skip_configured",
}
_NODE_IGNORED: Final = frozenset({"containerRuntimeEndpoint", "cgroupDriver"})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


def parse_args(argv: Sequence[str] | None) -> dict[str, Any]:
    """Only the flags given (``None`` defaults), so precedence can tell them apart from defaults."""
    parser = argparse.ArgumentParser(prog="kube-vgpu-plugin", description="kube-vgpu node device plugin")
    for name in _FIELDS:
        flag = "--" + name.replace("_", "-")
        if name in _BOOL_FIELDS:
            parser.add_argument(flag, nargs="?", const="true", default=None, metavar="BOOL")
        else:
            parser.add_argument(flag, default=None)
    return {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found = {n: env[_ENV_PREFIX + n.upper()] for n in _FIELDS if _ENV_PREFIX + n.upper() in env}
    if "NODE_NAME" in env:
        found.setdefault("node_name", env["NODE_NAME"])
    if env.get("CDI_ENABLED", "").lower() in {"1", "true", "yes"}:
        found.setdefault("device_list_strategy", DeviceListStrategy.CDI.value)
    if "CDI_PREFIX" in env:
        found.setdefault("cdi_prefix", env["CDI_PREFIX"])
    for name, field in _SEED_MIG_ENV.items():
        if name in env:
            found.setdefault(field, env[name])
    return found


def _from_file(path: Path, node_name: str | None) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"config file {path}: cannot be read: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path}: must be a mapping with 'version: {CONFIG_VERSION}'")
    if doc.get("version") != CONFIG_VERSION:
        raise ConfigError(f"config file {path}: version: {doc.get('version')!r} is not supported, use v1")
    by_key = {_camel(n): n for n in _FIELDS if n not in {"config_file", "uninstall"}}
    values = _keys(doc, by_key, {"version", "nodeConfig"}, f"config file {path}")
    for entry in _node_entries(doc.get("nodeConfig"), path):
        if entry.get("name") == node_name:
            values.update(_keys(entry, by_key, {"name"} | _NODE_IGNORED, f"{path} nodeConfig[{node_name}]"))
    return values


def _node_entries(raw: object, path: Path) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(e, dict) and "name" in e for e in raw):
        raise ConfigError(f"config file {path}: nodeConfig must be a list of mappings with a 'name'")
    return raw


def _keys(
    doc: Mapping[str, Any], by_key: Mapping[str, str], extra: set[str] | frozenset[str], where: str
) -> dict[str, Any]:
    unknown = sorted(set(doc) - set(by_key) - set(extra))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
    return {by_key[k]: v for k, v in doc.items() if k in by_key}


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags > env > config file (node override > file) > defaults; raises :class:`ConfigError`."""
    flags = parse_args(argv)
    from_env = _from_env(os.environ if env is None else env)
    config_file = flags.get("config_file") or from_env.get("config_file")
    node_name = flags.get("node_name") or from_env.get("node_name")
    from_file = _from_file(Path(config_file), node_name) if config_file else {}
    merged = {**from_file, **from_env, **flags}
    if isinstance(merged.get("ignored_xids"), str):
        merged["ignored_xids"] = [x for x in merged["ignored_xids"].split(",") if x.strip()]
    try:
        return Settings(**merged)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        source = "flag" if field in flags else "env" if field in from_env else "config file"
        flag = "--" + field.replace("_", "-")
        raise ConfigError(f"invalid setting {flag} (from {source}): {first['msg']}") from err
