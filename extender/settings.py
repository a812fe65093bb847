"""The extender's settings: one frozen, validated value, from flags > environment > config file > defaults.

The convention is the plugin's too (:mod:`kube_vgpu_cli.options`, which does the loading): flags
``--node-policy``, environment ``KUBE_VGPU_EXTENDER_NODE_POLICY``, config-file key ``nodePolicy`` in a YAML
file with ``version: v1`` named by ``--config-file`` / ``KUBE_VGPU_EXTENDER_CONFIG_FILE``. Unknown keys,
unknown ``KUBE_VGPU_EXTENDER_`` variables and other versions are refused; ``--help`` shows each field's
docstring, default, choices and variable.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from kube_vgpu_cli.logs import LogFormat, LogLevel
from kube_vgpu_cli.options import CONFIG_VERSION, Cli, FileValues
from vcuda.model import Policy
from vcuda.names import DEFAULT_DOMAIN

__all__ = ["CLI", "CONFIG_VERSION", "ENV_PREFIX", "Settings", "SettingsError", "load_settings"]

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

    host: str = "127.0.0.1"
    """Address of the scheduling verbs (filter, prioritize, bind, preempt). Loopback: only the kube-scheduler
    sidecar in the same pod reaches them. Any other address requires the three ``scheduler_tls_*`` files
    (HTTPS with client certificates) or the extender refuses to start."""
    port: int = Field(8888, ge=1, le=65535)
    """The port of the chart's ``urlPrefix`` (``http://127.0.0.1:8888/scheduler``)."""
    scheduler_tls_cert_file: Path | None = None
    """Serving certificate of the scheduling verbs (default-scheduler mode: reached through a Service)."""
    scheduler_tls_key_file: Path | None = None
    """Private key of ``scheduler_tls_cert_file``."""
    scheduler_client_ca_file: Path | None = None
    """CA that issued kube-scheduler's client certificate (its extender ``tlsConfig.certFile``); a client
    without a certificate it signed cannot complete the handshake."""
    scheduler_names: str = "kube-vgpu-scheduler"
    """Comma-separated ``schedulerName`` values whose pods bind accepts (``default-scheduler`` when kube-vgpu
    extends the default scheduler); bind refuses a pod naming another scheduler."""
    metrics_host: str = "0.0.0.0"
    """Address of ``/metrics``, ``/healthz`` and ``/readyz`` (read-only; Prometheus and the kubelet's probes
    reach it from outside the pod)."""
    metrics_port: int | None = Field(8889, ge=1, le=65535)
    """Port of the metrics listener, which serves nothing else."""
    url_prefix: str = "/scheduler"
    """The path part of ``urlPrefix``; the verbs are also served at the root."""
    resource_domain: str = DEFAULT_DOMAIN
    """Domain of the resource and annotation names; must match the plugin's."""
    assignment_key_file: Path | None = None
    """The Ed25519 private key (PEM, a mounted Secret) that signs assignments. Required to run."""
    assignment_verify_keys: Path | None = None
    """More Ed25519 public keys (a PEM file or a directory, the chart's ConfigMap) that assignments may be
    signed with besides the signing key: the old key during a rotation (docs/security.md)."""
    node_policy: Policy = Policy.BINPACK
    """Fill nodes first, keeping whole nodes free for large pods."""
    gpu_policy: Policy = Policy.SPREAD
    """Spread shares over a node's GPUs: less contention for compute between tenants."""
    node_cache_capable: bool = True
    """The mode answered when a request carries neither ``NodeNames`` nor ``Nodes`` (the chart's mode)."""
    reservation_grace_s: float = Field(120.0, gt=0)
    """How long a bound pod may stay unconfirmed by the plugin before it stops holding back indistinguishable
    pods: longer than an image pull on a warm node, short enough that a lost confirmation does not stall."""
    gone_pod_hold_s: float = Field(30.0, ge=0)
    """How long a bound GPU pod deleted before its kubelet ended it (force-deleted: no ``Succeeded`` or
    ``Failed`` phase) keeps its GPUs: a kubelet restarted meanwhile still counts its devices until it has
    synced its pods, and a pod given them fails admission. 0 gives them back at once."""
    gone_pod_hold_max: int = Field(4, ge=0)
    """How many such pods of one namespace are held at once; more are given back at once, so a loop of
    create, bind, force-delete cannot hold more than this many pods' GPUs beyond its quota."""
    resync_s: float = Field(5.0, gt=0)
    """How often expired reservations are swept (and held GPUs of deleted pods released)."""
    log_level: LogLevel = "info"
    """Logging threshold."""
    log_format: LogFormat = LogFormat.TEXT
    """``text`` for people, ``json`` (one object per line, with the structured fields) for log pipelines."""
    webhook_port: int | None = Field(None, ge=1, le=65535)
    """HTTPS port of the admission webhook, which serves nothing else; unset serves no webhook."""
    webhook_host: str = "0.0.0.0"
    """Address of the webhook (the API server calls it through the Service)."""
    tls_cert_file: Path | None = None
    """The webhook's serving certificate; reloaded when the file changes."""
    tls_key_file: Path | None = None
    """Private key of ``tls_cert_file``; reloaded with it."""
    webhook_scheduler_name: str | None = None
    """When set, the mutating webhook sends GPU pods to this scheduler."""
    gpu_translation: bool = False
    """The mutating webhook rewrites ``nvidia.com/gpu: N`` to ``vcuda-core: N*100`` in namespaces labelled
    ``<domain>/gpu-translation=enabled`` (read from the API server: needs ``get`` on namespaces)."""
    kubeconfig: Path | None = None
    """Outside a cluster only; in a pod the service account is used."""
    config_file: Path | None = None
    """YAML settings: ``version: v1`` and camelCase keys (``nodePolicy: spread``), below flags and
    environment."""
    leader_elect: bool = False
    """Run as one of several replicas behind a Service (default-scheduler mode): only the holder of a
    ``coordination.k8s.io/v1`` Lease answers the scheduling verbs; the others answer 503 and are not ready, so
    the Service sends kube-scheduler to the leader only. A new leader lists the cluster again before it
    answers. Off for the sidecar of a second scheduler, whose kube-scheduler elects the leader."""
    leader_elect_resource_name: str = "kube-vgpu-extender"
    """Name of the Lease (the chart's RBAC allows get and update on this name only)."""
    leader_elect_resource_namespace: str | None = None
    """Namespace of the Lease; unset: the pod's own (its service account's namespace file)."""
    leader_elect_identity: str | None = None
    """This replica's name in the Lease; unset: the host name (the pod's name) and a random suffix."""
    leader_elect_lease_duration_s: float = Field(15.0, gt=0)
    """How long a standby waits after the leader's last renewal before taking over (kube's default)."""
    leader_elect_renew_deadline_s: float = Field(10.0, gt=0)
    """The leader stops answering when it could not renew for this long: before any standby may take over."""
    leader_elect_retry_period_s: float = Field(2.0, gt=0)
    """How often the leader renews and a standby tries to acquire (kube's default)."""

    @model_validator(mode="after")
    def _lease_timings(self) -> "Settings":
        lease, renew = self.leader_elect_lease_duration_s, self.leader_elect_renew_deadline_s
        if not lease > renew > 1.2 * self.leader_elect_retry_period_s:  # client-go's own check
            raise ValueError(
                "leader election needs lease duration > renew deadline > 1.2 x retry period, got "
                f"{lease:g} s, {renew:g} s, {self.leader_elect_retry_period_s:g} s"
            )
        return self


# The plugin's spelling of durations (``--*-seconds``), accepted here too.
_RENAMED: Final = {
    "reservation_grace_s": "reservation_grace_seconds",
    "gone_pod_hold_s": "gone_pod_hold_seconds",
    "resync_s": "resync_seconds",
    "leader_elect_lease_duration_s": "leader_elect_lease_duration_seconds",
    "leader_elect_renew_deadline_s": "leader_elect_renew_deadline_seconds",
    "leader_elect_retry_period_s": "leader_elect_retry_period_seconds",
}
CLI: Final = Cli(
    model=Settings,
    prog="kube-vgpu-extender",
    description="kube-vgpu scheduler extender: filter, prioritize and bind for fractional GPUs, and the "
    "admission webhook.",
    env_prefix=ENV_PREFIX,
    error=SettingsError,
    env_aliases={ENV_PREFIX + new.upper(): old for old, new in _RENAMED.items()},
    flag_aliases={old: ("--" + new.replace("_", "-"),) for old, new in _RENAMED.items()},
    epilog="Precedence: flags > environment > config file > defaults. Environment: "
    f"{ENV_PREFIX}<SETTING> ({ENV_PREFIX}CONFIG_FILE for the file); config-file keys are camelCase, under "
    f"version: {CONFIG_VERSION}. Docs: docs/extender.md.",
)


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Merge the sources (flags > environment > file > defaults) and validate once; raises
    :class:`SettingsError` naming the flag, the source and the value."""
    sources = CLI.sources(argv, os.environ if env is None else env)
    path = sources.given("config_file")
    return CLI.settle(sources, _from_file(Path(path)) if path else FileValues())


def _from_file(path: Path) -> FileValues:
    doc = CLI.read_file(path)
    CLI.check_version(doc, path)
    return CLI.file_keys(doc, f"config file {path}", frozenset({"version"}))
