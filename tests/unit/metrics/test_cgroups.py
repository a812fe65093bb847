"""parse_cgroup: every cgroup layout kube-vgpu supports, and the processes it must not claim.

Matrix: cgroup v2 / v1 / hybrid x systemd / cgroupfs driver x containerd / CRI-O / docker IDs x QoS classes,
kind's nested kubelet.slice, static-pod UIDs, conmon and host processes.
"""

import pytest

from plugin.metrics.cgroups import CgroupRef, parse_cgroup
from tests.fakes.node import (
    HOST_PROCESS,
    cid,
    uid,
    v1_cgroupfs,
    v1_systemd,
    v2_cgroupfs,
    v2_systemd,
)

U, C = uid(7), cid(0xABC)
KIND = (
    "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
    f"kubelet-kubepods-besteffort-pod{U.replace('-', '_')}.slice/cri-containerd-{C}.scope\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(v2_systemd(U, C), CgroupRef(U, C), id="v2 systemd containerd burstable"),
        pytest.param(v2_systemd(U, C, "crio", qos=""), CgroupRef(U, C), id="v2 systemd CRI-O guaranteed"),
        pytest.param(
            v2_systemd(U, C, "docker", "besteffort"), CgroupRef(U, C), id="v2 systemd docker besteffort"
        ),
        pytest.param(v2_cgroupfs(U, C), CgroupRef(U, C), id="v2 cgroupfs burstable"),
        pytest.param(v2_cgroupfs(U, C, qos=""), CgroupRef(U, C), id="v2 cgroupfs guaranteed"),
        pytest.param(v1_cgroupfs(U, C), CgroupRef(U, C), id="v1 cgroupfs besteffort, every controller"),
        pytest.param(
            v1_systemd(U, C), CgroupRef(U, C), id="v1 systemd docker (hybrid: empty v2 line ignored)"
        ),
        pytest.param(v1_systemd(U, C, "cri-containerd"), CgroupRef(U, C), id="v1 systemd containerd"),
        pytest.param(KIND, CgroupRef(U, C), id="kind: nested kubelet.slice"),
        pytest.param(
            v2_systemd(U, C).rstrip("\n") + "/init.scope\n",
            CgroupRef(U, C),
            id="nested cgroup inside container",
        ),
        pytest.param(
            f"0::/kubepods/burstable/pod{'f' * 32}/{C}\n",
            CgroupRef("f" * 32, C),
            id="static pod config-hash UID",
        ),
        pytest.param(
            f"0::/kubepods.slice/kubepods-pod{U.replace('-', '_')}.slice/crio-conmon-{C}.scope\n",
            CgroupRef(U, None),
            id="CRI-O conmon: pod but no container",
        ),
        pytest.param(HOST_PROCESS, None, id="host process"),
        pytest.param(f"0::/docker/{C}\n", None, id="plain docker container, not a pod"),
        pytest.param("", None, id="empty file (zombie)"),
        pytest.param("garbage without colons\n", None, id="malformed line"),
    ],
)
def test_cgroup_file_names_pod_and_container(text, expected):
    assert parse_cgroup(text) == expected


def test_systemd_underscored_uid_is_returned_with_dashes():
    ref = parse_cgroup(v2_systemd("0000abcd-1111-2222-3333-444455556666", C))
    assert ref is not None
    assert ref.pod_uid == "0000abcd-1111-2222-3333-444455556666"


def test_v2_line_wins_over_v1_lines_when_both_name_a_pod():
    other = uid(9)
    text = v1_cgroupfs(other, cid(1)) + v2_cgroupfs(U, C)
    assert parse_cgroup(text) == CgroupRef(U, C)
