"""The node under test: one agent running the profile's provider against the dev cluster, shared by
the checks of one suite, and what the checks ask of it through the API server and real kubectl.

The agent is started as a user starts it (`AgentProcess`), its serving certificate approved so
the kubelet API answers through the API server, and it can be killed and started again on the same
state directory (the restart-adoption check).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..devcluster import DevCluster, wait_until
from ..sdk import Capabilities
from .profile import ConformanceProfile
from .workloads import Workload

if TYPE_CHECKING:
    from ..devcluster.agent import AgentProcess

__all__ = ["ConformanceNode", "RunningPod"]

#: Pods of the suite tolerate the taint every virtual node has.
TOLERATION = {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}

Pod = dict[str, Any]
#: What `/runningpods` tells about a pod: (namespace, name, uid, container names). Only these
#: fields are relied on: a kubelet's `/runningpods` tells no more.
RunningPod = tuple[str, str, str, tuple[str, ...]]


class ConformanceNode:
    """An agent on a node of its own, for one profile."""

    def __init__(
        self, cluster: DevCluster, profile: ConformanceProfile, node_name: str, workdir: Path
    ) -> None:
        self.cluster = cluster
        self.profile = profile
        self.name = node_name
        self.workdir = workdir
        self._agents: list[AgentProcess] = []
        self._capabilities: Capabilities | None = profile.capabilities

    # --- the agent ----------------------------------------------------------------------------

    @property
    def agent(self) -> AgentProcess:
        """The agent running now (the last one started)."""
        return self._agents[-1]

    def start(self) -> None:
        """Start an agent on this node and state directory; return once it serves the kubelet
        API, which it opens only after adopting the pods its provider still runs."""
        from ..devcluster.agent import AgentProcess  # the agent's code, only when one runs

        env = dict(self.profile.env)
        if self._agents:  # the same port again: the API server has it in the node's status
            env["KUBELET_PORT"] = str(self.agent.kubelet_port)
        agent = AgentProcess(
            self.cluster,
            self.name,
            self.workdir,
            provider=self.profile.provider,
            provider_config=self.profile.config,
            args=self.profile.args,
            env=env,
        )
        self._agents.append(agent.start())
        agent.wait_ready(self.profile.timeout)
        agent.approve_serving_certificate(self.profile.timeout)

    def crash_and_restart(self) -> None:
        """`kill -9` the agent, then start another on the same node and state directory."""
        self.agent.kill()
        self.start()

    def close(self) -> None:
        """Stop the agent, remove what its pods left on this machine, and delete the node."""
        if self._agents:
            self.agent.stop()
            self.agent.cleanup()
        self.cluster.kubectl("delete", "node", self.name, "--wait=false", check=False)

    def log_tail(self, size: int = 3000) -> str:
        """The end of the agent's log, for failure messages."""
        return self.agent.log()[-size:] if self._agents else ""

    @property
    def capabilities(self) -> Capabilities:
        """The profile's table, or the provider's own (built once, in a child process)."""
        if self._capabilities is None:
            self._capabilities = self._probe_capabilities()
        return self._capabilities

    def _probe_capabilities(self) -> Capabilities:
        argv = [sys.executable, "-m", "virtual_kubelet.testing.capabilities_probe"]
        argv.append(self.profile.provider)
        if self.profile.config is not None:
            path = self.workdir / "capabilities-config.json"
            path.write_text(json.dumps(self.profile.config))
            argv.append(str(path))
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={**os.environ, **self.profile.env},
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"could not read the capabilities of provider {self.profile.provider!r}:\n"
                f"{result.stderr[-3000:]}"
            )
        return Capabilities(**json.loads(result.stdout))

    # --- pods ---------------------------------------------------------------------------------

    def manifest(
        self,
        name: str,
        workload: Workload,
        *,
        container: Mapping[str, Any] | None = None,
        **spec: Any,
    ) -> Pod:
        """A pod bound to this node with one container named `main` doing `workload`; `container`
        adds fields to that container, `spec` to the pod's spec."""
        main: dict[str, Any] = {"name": "main", "image": self.profile.workloads.image}
        main.update(workload.container)
        main.update(container or {})
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "annotations": dict(workload.annotations)},
            "spec": {
                "nodeName": self.name,
                "tolerations": [TOLERATION],
                "containers": [main],
                **spec,
            },
        }

    def create(self, namespace: str, obj: Mapping[str, Any]) -> None:
        self.cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj))

    def pod(self, namespace: str, name: str) -> Pod | None:
        """The pod as the API server has it, or None once it is gone."""
        result = self.cluster.kubectl(
            "get", "pod", name, "-n", namespace, "-o", "json", check=False
        )
        if result.returncode == 0:
            found: Pod = json.loads(result.stdout)
            return found
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(f"kubectl get pod {name}: {result.stderr}")

    def wait_for_pod(
        self,
        namespace: str,
        name: str,
        condition: Callable[[Pod], bool],
        what: str,
        timeout: float | None = None,
    ) -> Pod:
        """Wait until the pod satisfies `condition`; fail with the agent's log if the agent died."""

        def probe() -> Pod | None:
            self._check_agent_alive()
            found = self.pod(namespace, name)
            return found if found is not None and condition(found) else None

        return wait_until(probe, timeout or self.profile.timeout, f"{name} {what}", interval=0.5)

    def wait_running(self, namespace: str, name: str) -> Pod:
        """Wait until the pod is Running and Ready."""
        return self.wait_for_pod(namespace, name, running_and_ready, "to be Running and Ready")

    def _check_agent_alive(self) -> None:
        process = self.agent.process
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the agent exited with {process.poll()}:\n{self.log_tail()}")

    # --- the kubelet API, through the API server -----------------------------------------------

    def running_pods(self) -> list[RunningPod]:
        """The kubelet API's `/runningpods`: what the provider says it runs."""
        raw = self.cluster.kubectl(
            "get", "--raw", f"/api/v1/nodes/{self.name}/proxy/runningpods/"
        ).stdout
        found = []
        for item in json.loads(raw).get("items") or []:
            meta = item.get("metadata") or {}
            containers = (item.get("spec") or {}).get("containers") or []
            found.append(
                (
                    str(meta.get("namespace", "")),
                    str(meta.get("name", "")),
                    str(meta.get("uid", "")),
                    tuple(str(c.get("name", "")) for c in containers),
                )
            )
        return found

    def running_uids(self) -> list[str]:
        return [uid for _, _, uid, _ in self.running_pods()]

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """kubectl against the dev cluster, never raising on a non-zero exit; a command still
        running after `timeout` seconds is a failure of its own (a hang, not an answer)."""
        try:
            return self.cluster.kubectl(*args, input=input, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"kubectl {' '.join(args)} did not answer within {timeout:.0f} s"
            ) from None


def running_and_ready(pod: Pod) -> bool:
    status = pod.get("status") or {}
    ready = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return status.get("phase") == "Running" and ready.get("Ready") == "True"


def phase_in(*phases: str) -> Callable[[Pod], bool]:
    return lambda pod: (pod.get("status") or {}).get("phase") in phases


def container_statuses(pod: Pod) -> dict[str, dict[str, Any]]:
    """The pod's container statuses by container name."""
    return {str(s.get("name")): s for s in (pod.get("status") or {}).get("containerStatuses") or []}


def env_lines(text: str) -> dict[str, str]:
    """`NAME=value` lines (as `env` prints them) as a mapping; other lines are ignored."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name and " " not in name:
            found[name] = value
    return found
