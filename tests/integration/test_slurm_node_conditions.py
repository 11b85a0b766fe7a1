"""The slurm provider's node follows Slurm's partition and node state, against a real Slurm and
the real control plane: a partition set DOWN or a drained node turns the `SlurmAvailable`
condition False with Slurm's reason (Ready stays True: running jobs go on, so nothing is
evicted), a node set DOWN makes the node NotReady with its reason, and each comes back when Slurm
does.

These tests change the state of Slurm's node and partition, so they use a Slurm of their own
(beside the `slurm` fixture's, on other ports), never the one other tests submit jobs to."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.slurm import PARTITION, SlurmCluster, SlurmUnavailable

from .conftest import AgentFactory, condition


@pytest.fixture(scope="module")
def own_slurm() -> Iterator[SlurmCluster]:
    checkout = Path(__file__).resolve().parents[2]
    name = f"conditions-{zlib.crc32(str(checkout).encode()) % 100000}"
    cluster = SlurmCluster.named(name)
    try:
        cluster.up()
    except SlurmUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Slurm is required under CI=true: {exc}")
        pytest.skip(f"no Slurm here: {exc}")
    try:
        yield cluster
    finally:
        cluster.down()


def _scontrol(cluster: SlurmCluster, *argv: str) -> None:
    done = cluster.cli("scontrol", "update", *argv)
    assert done.returncode == 0, done.stderr


def _slurm_state(cluster: SlurmCluster) -> str:
    shown = cluster.cli("sinfo", "--noheader", "--Node", "--nodes=localhost", "--format=%t")
    return shown.stdout.split("\n")[0].strip()


def _node(cluster: DevCluster, name: str) -> dict[str, Any]:
    shown = cluster.kubectl("get", "node", name, "-o", "json")
    node: dict[str, Any] = json.loads(shown.stdout)
    return node


def _wait_condition(
    cluster: DevCluster, name: str, kind: str, status: str, what: str, timeout: float = 60
) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        found = condition(_node(cluster, name), kind)
        return found if found is not None and found["status"] == status else None

    return wait_until(seen, timeout, what)


def test_partition_and_node_state_become_node_conditions_with_slurms_reason(
    devcluster: DevCluster, start_agent: AgentFactory, own_slurm: SlurmCluster
) -> None:
    agent = start_agent(
        provider="slurm",
        provider_config={
            "slurm_conf": str(own_slurm.config_file),
            "partition": PARTITION,
            "poll_seconds": 1,
            "capacity_refresh_seconds": 1,
        },
    )
    node = agent.wait_ready()
    name = agent.node_name
    cpus = node["status"]["capacity"]["cpu"]
    assert cpus != "0"
    up = _wait_condition(devcluster, name, "SlurmAvailable", "True", "SlurmAvailable=True")
    assert up["reason"] == "SlurmPartitionUp"

    try:
        # The partition DOWN: no new job starts; Ready stays, as running jobs go on.
        _scontrol(own_slurm, f"PartitionName={PARTITION}", "State=DOWN")
        down = _wait_condition(devcluster, name, "SlurmAvailable", "False", "partition DOWN")
        assert down["reason"] == "SlurmPartitionDown"
        assert down["message"] == (
            f"Slurm partition {PARTITION} is DOWN: no new job starts there (running ones go on)"
        )
        assert (condition(_node(devcluster, name), "Ready") or {}).get("status") == "True"
        _scontrol(own_slurm, f"PartitionName={PARTITION}", "State=UP")
        _wait_condition(devcluster, name, "SlurmAvailable", "True", "the partition UP again")

        # The node drained, with a reason: the condition says it; the capacity drops to 0.
        _scontrol(own_slurm, "NodeName=localhost", "State=DRAIN", "Reason=vk-test maintenance")
        drained = _wait_condition(devcluster, name, "SlurmAvailable", "False", "node drained")
        assert drained["reason"] == "SlurmNodesUnavailable"
        assert "localhost drain" in drained["message"]
        assert "(vk-test maintenance)" in drained["message"]
        shown = _node(devcluster, name)
        assert (condition(shown, "Ready") or {}).get("status") == "True"
        wait_until(
            lambda: _node(devcluster, name)["status"]["capacity"]["cpu"] == "0",
            30,
            "the capacity without the drained node",
        )
        _scontrol(own_slurm, "NodeName=localhost", "State=RESUME")
        _wait_condition(devcluster, name, "SlurmAvailable", "True", "the node resumed")
        wait_until(
            lambda: _node(devcluster, name)["status"]["capacity"]["cpu"] == cpus,
            30,
            "the capacity back",
        )

        # The node DOWN: no job runs at all, the node is NotReady with Slurm's reason. Only once
        # slurmd answers again after the resume: a node that registers while DOWN is returned to
        # service at once (ReturnToService=2), before the agent could see it down.
        wait_until(lambda: _slurm_state(own_slurm) == "idle", 60, "slurmd answering again")
        _scontrol(own_slurm, "NodeName=localhost", "State=DOWN", "Reason=vk-test power cut")
        ready = _wait_condition(devcluster, name, "Ready", "False", "NotReady with the node down")
        assert "localhost down" in ready["message"]
        assert "(vk-test power cut)" in ready["message"]
        _scontrol(own_slurm, "NodeName=localhost", "State=RESUME")
        _wait_condition(devcluster, name, "Ready", "True", "Ready again", timeout=90)
        _wait_condition(devcluster, name, "SlurmAvailable", "True", "available again")
    finally:
        # Leave the Slurm as found, even after a failed step.
        own_slurm.cli("scontrol", "update", f"PartitionName={PARTITION}", "State=UP")
        own_slurm.cli("scontrol", "update", "NodeName=localhost", "State=RESUME")
