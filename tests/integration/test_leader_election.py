"""HA: two agents for one node elect a leader (--leader-elect); only the leader serves the node.

Both run the mock provider with `persist: true` on one shared state directory (what two replicas
on shared storage, or in front of the same backend, see). The leader is killed with SIGKILL: the
standby takes the node over within the lease duration, the node never goes NotReady, and the pods
are adopted, not created again. A graceful stop hands over at once; a leader whose Lease is taken
from it stops serving and exits.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.pytest_plugin import TEST_NODE_MONITOR_GRACE_PERIOD
from virtual_kubelet.kube import config as kubeconfig
from virtual_kubelet.kube.client import KubeClient
from virtual_kubelet.kube.timefmt import parse
from virtual_kubelet.node.leader import ElectionSettings, LeaderElector

from .conftest import create, pod, pod_manifest

#: Short, so the test is quick; still client-go's shape (duration > renew deadline > retry).
LEASE_DURATION_S = 4
RETRY_PERIOD_S = 1.0
#: A candidate waits between one and 2.2 retry periods (client-go's jitter factor 1.2).
MAX_RETRY_WAIT_S = RETRY_PERIOD_S * 2.2
GRACE_S = float(TEST_NODE_MONITOR_GRACE_PERIOD.rstrip("s"))


class NodeWatch:
    """Reads the Node and its heartbeat Lease every half second in the background, remembering
    every Ready status seen and the longest time between two heartbeats."""

    def __init__(self, cluster: DevCluster, node: str) -> None:
        self.cluster, self.node = cluster, node
        self.ready_seen: list[str] = []
        self.renewals: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> NodeWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            result = self.cluster.kubectl(
                "get",
                "-n",
                "kube-node-lease",
                f"node/{self.node}",
                f"lease/{self.node}",
                "-o",
                "json",
                check=False,
            )
            if result.returncode != 0:
                self.ready_seen.append("absent")
                continue
            node, lease = json.loads(result.stdout)["items"]
            for c in node["status"].get("conditions", []):
                if c["type"] == "Ready":
                    self.ready_seen.append(c["status"])
            renewed = lease["spec"].get("renewTime", "")
            if not self.renewals or self.renewals[-1] != renewed:
                self.renewals.append(renewed)

    def longest_heartbeat_gap(self) -> float:
        times = [parse(t).timestamp() for t in self.renewals]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def _candidate(
    cluster: DevCluster, node: str, workdir: Path, state: Path, identity: str, namespace: str
) -> AgentProcess:
    agent = AgentProcess(
        cluster,
        node,
        workdir,
        provider_config={"persist": True},
        args=[
            "--leader-elect",
            f"--leader-elect-namespace={namespace}",
            f"--leader-elect-identity={identity}",
            f"--leader-elect-lease-duration={LEASE_DURATION_S}s",
            "--leader-elect-renew-deadline=3s",
            f"--leader-elect-retry-period={RETRY_PERIOD_S:g}s",
        ],
    )
    agent.state_dir = state  # shared by the candidates: the persisted mock's journal
    return agent.start()


def _election_lease(cluster: DevCluster, namespace: str, node: str) -> dict[str, Any]:
    lease: dict[str, Any] = cluster.get_json("lease", f"virtual-kubelet-{node}", "-n", namespace)
    return lease


def test_standby_takes_over_without_restarting_pods(
    devcluster: DevCluster, kube_namespace: str, tmp_path: Path
) -> None:
    node = f"vk-ha-{secrets.token_hex(3)}"
    state = tmp_path / "shared-state"
    agents: list[AgentProcess] = []

    def candidate(identity: str) -> AgentProcess:
        agent = _candidate(devcluster, node, tmp_path / identity, state, identity, kube_namespace)
        agents.append(agent)
        return agent

    def holder() -> str:
        return str(_election_lease(devcluster, kube_namespace, node)["spec"].get("holderIdentity"))

    try:
        first = candidate("first")
        first.wait_ready()
        assert holder() == "first"
        second = candidate("second")
        wait_until(lambda: "standing by: first leads" in second.log(), 30, "a standby")

        names = [f"ha-{i}" for i in range(3)]
        for name in names:
            create(devcluster, kube_namespace, pod_manifest(name, node))

        def running() -> dict[str, dict[str, Any]] | None:
            pods = {n: pod(devcluster, kube_namespace, n) for n in names}
            if all((p or {}).get("status", {}).get("phase") == "Running" for p in pods.values()):
                return {n: p for n, p in pods.items() if p}
            return None

        before = wait_until(running, 60, "the pods to run on the leader")
        started = {n: p["status"]["containerStatuses"][0]["state"] for n, p in before.items()}
        creations = first.mock_creations()
        assert len(creations) == 3
        # The standby neither registered the node nor touched a pod.
        assert "registered" not in second.log()

        with NodeWatch(devcluster, node) as watch:
            wait_until(lambda: len(watch.renewals) >= 1, 30, "a first heartbeat seen")
            first.kill()
            killed = time.monotonic()
            wait_until(lambda: holder() == "second", 30, "the standby to take the Lease")
            took_over = time.monotonic() - killed
            # The killed leader renewed at most a retry period before the kill.
            assert took_over <= LEASE_DURATION_S + MAX_RETRY_WAIT_S + 1.0, took_over
            wait_until(lambda: "serving pods" in second.log(), 30, "the standby to serve")
            # Observe past the point where a silent node would have been marked NotReady.
            wait_until(
                lambda: time.monotonic() - killed > GRACE_S + 6 and len(watch.renewals) >= 3,
                GRACE_S + 30,
                "the node-monitor grace period to pass with heartbeats",
            )
        assert set(watch.ready_seen) == {"True"}, watch.ready_seen
        assert watch.longest_heartbeat_gap() < GRACE_S, watch.renewals
        not_ready = devcluster.get_json(
            "events", "-A", "--field-selector", f"involvedObject.name={node},reason=NodeNotReady"
        )["items"]
        assert not not_ready, not_ready

        after = running()
        assert after is not None, "the pods stopped running after the takeover"
        assert {n: p["status"]["containerStatuses"][0]["state"] for n, p in after.items()} == (
            started
        )
        assert second.mock_creations() == creations, "a pod was created again"

        # A graceful stop releases the Lease: the next standby takes over without waiting for it
        # to expire.
        third = candidate("third")
        wait_until(lambda: "standing by: second leads" in third.log(), 30, "a new standby")
        assert second.stop() == 0
        released = time.monotonic()
        wait_until(lambda: holder() == "third", 30, "the handover")
        assert time.monotonic() - released < LEASE_DURATION_S, "waited for the Lease to expire"
        wait_until(lambda: "serving pods" in third.log(), 30, "the new leader to serve")
        assert third.mock_creations() == creations

        # A leader whose Lease someone else took stops serving at once and exits.
        lease = _election_lease(devcluster, kube_namespace, node)
        lease["spec"].update(holderIdentity="intruder", leaseDurationSeconds=3600)
        devcluster.kubectl("replace", "-f", "-", input=json.dumps(lease))
        assert third.process is not None
        process = third.process
        wait_until(lambda: process.poll() is not None, 10, "the deposed leader to exit")
        assert process.returncode == 1
        assert "lost the leadership of node" in third.log()
        assert "intruder holds the Lease now" in third.log()
    finally:
        for agent in agents:
            agent.stop()
            agent.cleanup()
        devcluster.kubectl("delete", "node", node, "--wait=false", check=False)


def test_candidates_racing_for_the_lease_elect_exactly_one(
    devcluster: DevCluster, kube_namespace: str
) -> None:
    """Several candidates at once, for a Lease that does not exist yet and again for one that was
    released: each time exactly one wins (create and compare-and-swap by resourceVersion), and
    the others stand by while it renews."""

    async def race() -> None:
        config = kubeconfig.from_kubeconfig(devcluster.kubeconfig)
        clients = [KubeClient(config, name=f"candidate-{i}") for i in range(4)]
        try:
            for _ in range(2):  # a Lease to create, then a released one to take over
                electors = [
                    LeaderElector(
                        client,
                        ElectionSettings(
                            "race",
                            namespace=kube_namespace,
                            identity=f"candidate-{i}",
                            lease_duration=3,
                            renew_deadline=2,
                            retry_period=0.2,
                        ),
                    )
                    for i, client in enumerate(clients)
                ]
                waiting = {asyncio.create_task(e.acquire()): e for e in electors}
                done, pending = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                assert len(done) == 1
                winner = waiting[done.pop()]
                renewing = asyncio.create_task(winner.keep_leading())
                # Longer than the lease duration: the others would have taken an unrenewed
                # Lease by now.
                await asyncio.wait(pending, timeout=5)
                assert not any(t.done() for t in pending), "a second leader"
                assert all(not e.leading for e in electors if e is not winner)
                for task in [*pending, renewing]:
                    task.cancel()
                await asyncio.gather(*pending, renewing, return_exceptions=True)
                await winner.release()
        finally:
            for client in clients:
                await client.close()

    asyncio.run(race())
