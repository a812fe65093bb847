"""Settings precedence and validation; the admission decisions.

Settings: flags > env > file > defaults; a config file must say version v1; unknown keys, env variables and
bad values are errors naming the source. Webhook: invalid vcuda requests are denied with the scheduler's
sentence, hand-written kube-vgpu annotations are denied, pods without GPUs pass untouched; the mutating
webhook sets schedulerName on GPU pods that name no other scheduler.
"""

import base64
import json

import pytest

from extender.api import AdmissionRequest
from extender.settings import Settings, SettingsError, load_settings
from extender.webhook import mutate, validate
from tests.fakes.extender import NAMES, pod_obj
from vcuda.model import Policy


def test_flags_beat_env_beat_file_beat_defaults(tmp_path):
    config = tmp_path / "extender.yaml"
    config.write_text(
        "version: v1\nnodePolicy: spread\ngpuPolicy: binpack\nport: 9000\nreservationGraceS: 30\n"
    )
    env = {"KUBE_VGPU_EXTENDER_GPU_POLICY": "spread", "KUBE_VGPU_EXTENDER_PORT": "9100"}
    settings = load_settings(["--config-file", str(config), "--port", "9200"], env)
    assert settings.node_policy is Policy.SPREAD  # file
    assert settings.gpu_policy is Policy.SPREAD  # env over file
    assert settings.port == 9200  # flag over env
    assert settings.reservation_grace_s == 30
    assert settings.url_prefix == "/scheduler"  # default


def test_the_chart_flags_parse():
    settings = load_settings(
        [
            "--port=8888",
            "--resource-domain=nvidia.com",
            "--assignment-key-file=/k",
            "--node-policy=binpack",
            "--gpu-policy=spread",
            "--log-level=info",
            "--webhook-port=8443",
            "--tls-cert-file=/c",
            "--tls-key-file=/k2",
            "--webhook-scheduler-name=kube-vgpu-scheduler",
        ],
        {},
    )
    assert settings.webhook_port == 8443
    assert settings.webhook_scheduler_name == "kube-vgpu-scheduler"
    with pytest.raises(Exception):  # noqa: B017, PT011 - frozen
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "env", "flags", "message"),
    [
        pytest.param("version: v2\n", {}, [], "version 'v2' is not supported", id="other version"),
        pytest.param("nodePolicy: spread\n", {}, [], "version None", id="no version"),
        pytest.param("version: v1\ncolour: red\n", {}, [], "colour", id="unknown key in file"),
        pytest.param(
            "version: v1\n", {"KUBE_VGPU_EXTENDER_COLOUR": "x"}, [], "unknown environment", id="unknown env"
        ),
        pytest.param("version: v1\n", {}, ["--node-policy=random"], "node_policy", id="bad policy"),
        pytest.param("version: v1\n", {}, ["--port=0"], "port", id="bad port"),
    ],
)
def test_bad_settings_are_refused_with_the_source(tmp_path, text, env, flags, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(["--config-file", str(config), *flags], env)


def test_defaults_are_valid():
    assert Settings().node_cache_capable


def review(pod) -> AdmissionRequest:
    return AdmissionRequest(uid="r1", object=pod, operation="CREATE")


@pytest.mark.parametrize(
    ("pod", "allowed", "needle"),
    [
        pytest.param(pod_obj("p", (30, 4096)), True, "", id="valid share"),
        pytest.param(pod_obj("p"), True, "", id="no GPU"),
        pytest.param(pod_obj("p", (150, 4096)), False, "vcuda-core 150 is invalid", id="150 cores"),
        pytest.param(
            pod_obj("p", (30, 4096), annotations={NAMES.assignment: "{}"}),
            False,
            "kube-vgpu only",
            id="hand-written assignment",
        ),
    ],
)
def test_validation_uses_the_schedulers_reasons(pod, allowed, needle):
    answer = validate(review(pod), NAMES)
    assert answer.uid == "r1"
    assert answer.allowed is allowed
    if needle:
        assert answer.status is not None
        assert needle in answer.status.message
        assert answer.status.code == 422


@pytest.mark.parametrize(
    ("pod_scheduler", "patched"),
    [
        pytest.param(None, True, id="no scheduler -> add"),
        pytest.param("default-scheduler", True, id="default -> replace"),
        pytest.param("volcano", False, id="another scheduler is left alone"),
        pytest.param("kube-vgpu-scheduler", False, id="already ours"),
    ],
)
def test_mutation_sends_gpu_pods_to_the_configured_scheduler(pod_scheduler, patched):
    pod = pod_obj("p", (30, 4096))
    if pod_scheduler:
        pod["spec"]["schedulerName"] = pod_scheduler
    answer = mutate(review(pod), NAMES, "kube-vgpu-scheduler")
    assert answer.allowed
    assert (answer.patch is not None) is patched
    if patched:
        ops = json.loads(base64.b64decode(answer.patch or ""))
        assert ops[0]["path"] == "/spec/schedulerName"
        assert ops[0]["value"] == "kube-vgpu-scheduler"


def test_mutation_leaves_pods_without_gpus_and_unconfigured_names_alone():
    assert mutate(review(pod_obj("p")), NAMES, "kube-vgpu-scheduler").patch is None
    assert mutate(review(pod_obj("p", (30, 4096))), NAMES, None).patch is None
