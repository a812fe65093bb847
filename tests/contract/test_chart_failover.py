"""The chart's failover shape (docs/operations.md, "Failover and API-server load").

Cases: by default two scheduler replicas in ``second`` mode, with leader election on a Lease the scheduler may
take, a PodDisruptionBudget, rolling updates; more than one replica without leader election is refused at
render time (two active schedulers would each bind from their own extender's ledger). ``extender`` mode (the
extenders elect a leader themselves; ``Recreate``, no PodDisruptionBudget) is in ``test_deploy_chart.py``.
"""

from pathlib import Path

import yaml

from tests.fixtures.chart import CHART, find, helm, render


def test_two_scheduler_replicas_elect_a_leader_by_default(helm_home: Path) -> None:
    objects = render(helm_home, [])
    deployment = find(objects, "Deployment", "-scheduler")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    config = yaml.safe_load(find(objects, "ConfigMap", "-scheduler")["data"]["config.yaml"])
    election = config["leaderElection"]
    assert election["leaderElect"] is True
    assert election["resourceName"] == config["profiles"][0]["schedulerName"]
    assert find(objects, "PodDisruptionBudget", "-scheduler")["spec"]["maxUnavailable"] == 1


def test_several_replicas_without_leader_election_are_refused(helm_home: Path) -> None:
    done = helm(
        "template", "kube-vgpu", str(CHART), "--kube-version", "v1.31.0",
        "--set", "scheduler.replicas=2", "--set", "scheduler.leaderElect=false",
        home=helm_home,
    )  # fmt: skip
    assert done.returncode != 0
    assert "needs scheduler.leaderElect" in done.stderr
    one = render(helm_home, ["scheduler.replicas=1", "scheduler.leaderElect=false"])
    assert find(one, "Deployment", "-scheduler")["spec"]["replicas"] == 1
