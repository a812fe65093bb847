"""The extender's settings: one frozen, validated value, from flags > environment > config file > defaults.

The config file is YAML with ``version: v1`` and camelCase keys (``nodePolicy: spread``); other versions are
refused. Environment variables are ``KUBE_VGPU_EXTENDER_<FIELD>`` (``KUBE_VGPU_EXTENDER_NODE_POLICY``); flags
are ``--node-policy``. Unknown keys anywhere are errors.
"""

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from vcuda.model import Policy
from vcuda.names import DEFAULT_DOMAIN

__all__ = ["CONFIG_VERSION", "ENV_PREFIX", "Settings", "SettingsError", "load_settings"]

CONFIG_VERSION: Final = "v1"
ENV_PREFIX: Final = "KUBE_VGPU_EXTENDER_"


class SettingsError(ValueError):
    """The settings cannot be used; the message names the offending source and field."""


class Settings(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )

    host: str = "0.0.0.0"
    """Listen on every interface: kube-scheduler reaches the sidecar on 127.0.0.1, the default scheduler
    through a Service."""
    port: int = Field(8888, ge=1, le=65535)
    """The port of the chart's ``urlPrefix`` (``http://127.0.0.1:8888/scheduler``)."""
    url_prefix: str = "/scheduler"
    """The path part of ``urlPrefix``; the verbs are also served at the root."""
    resource_domain: str = DEFAULT_DOMAIN
    """Domain of the resource and annotation names; must match the plugin's."""
    assignment_key_file: Path | None = None
    """The HMAC key (a mounted Secret) that signs assignments. Required to run."""
    node_policy: Policy = Policy.BINPACK
    """Fill nodes first, keeping whole nodes free for large pods."""
    gpu_policy: Policy = Policy.SPREAD
    """Spread shares over a node's GPUs: less contention for compute between tenants."""
    node_cache_capable: bool = True
    """The mode answered when a request carries neither ``NodeNames`` nor ``Nodes`` (the chart's mode)."""
    reservation_grace_s: float = Field(120.0, gt=0)
    """How long a bound pod may stay unconfirmed by the plugin before it stops holding back indistinguishable
    pods: longer than an image pull on a warm node, short enough that a lost confirmation does not stall."""
    resync_s: float = Field(5.0, gt=0)
    """How often expired reservations are swept."""
    log_level: str = "info"
    webhook_port: int | None = Field(None, ge=1, le=65535)
    """HTTPS port of the admission webhook; unset serves no webhook."""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    webhook_scheduler_name: str | None = None
    """When set, the mutating webhook sends GPU pods to this scheduler."""
    kubeconfig: Path | None = None
    """Outside a cluster only; in a pod the service account is used."""

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("log level must be debug, info, warning or error")
        return value.lower()


_FIELDS: Final = tuple(Settings.model_fields)


def _from_file(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SettingsError(f"config file {path}: {err}") from err
    if not isinstance(doc, dict):
        raise SettingsError(f"config file {path}: must be a mapping with version: {CONFIG_VERSION}")
    version = doc.pop("version", None)
    if version != CONFIG_VERSION:
        raise SettingsError(f"config file {path}: version {version!r} is not supported, use {CONFIG_VERSION}")
    return doc


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found = {name: env[ENV_PREFIX + name.upper()] for name in _FIELDS if ENV_PREFIX + name.upper() in env}
    unknown = [k for k in env if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() not in _FIELDS]
    if unknown:
        raise SettingsError(f"unknown environment variables: {', '.join(sorted(unknown))}")
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kube-vgpu-extender", description="kube-vgpu scheduler extender")
    parser.add_argument("--config-file", type=Path, help=f"YAML settings with version: {CONFIG_VERSION}")
    for name in _FIELDS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=(Settings.model_fields[name].description or None),
        )
    return parser


def load_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Merge the sources (flags > environment > file > defaults) and validate once."""
    env = os.environ if env is None else env
    flags = vars(_parser().parse_args(list(argv)))
    config_file = flags.pop("config_file", None) or env.get(ENV_PREFIX + "CONFIG_FILE")
    merged: dict[str, Any] = _from_file(Path(config_file)) if config_file else {}
    merged = {_snake(k): v for k, v in merged.items()}
    merged.update(_from_env({k: v for k, v in env.items() if k != ENV_PREFIX + "CONFIG_FILE"}))
    merged.update({k: v for k, v in flags.items() if v is not None})
    try:
        return Settings.model_validate(merged)
    except ValidationError as err:
        raise SettingsError(str(err)) from err


def _snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in key)
