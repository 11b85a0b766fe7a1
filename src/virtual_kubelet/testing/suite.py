"""The provider conformance suite: what "works" means for any provider, checked against the real
control plane through real kubectl.

Subclass `ProviderConformance` in a test module and give it a `profile` (or a class-scoped
`conformance_profile` fixture); every check below then runs against one agent on one node, shared
by the class (see docs/providers.md, "Test your provider"). A check the provider cannot take part
in, by its capabilities table or its profile, is skipped with the reason.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, ClassVar

import pytest

from ..devcluster import wait_until
from ..devcluster.ports import free_port
from .node import (
    ConformanceNode,
    Pod,
    container_statuses,
    env_lines,
    phase_in,
)
from .profile import ConformanceProfile
from .streaming import echo_over_tcp, kubectl_session, read_until

__all__ = ["ProviderConformance"]

# The env and volume check: one ConfigMap, one Secret, one volume mount.
_MOUNT = "/tmp/vk-conformance-config"
_FILE = "greeting.txt"

#: Kubelet API hooks and a kubectl command that needs each; the suite runs them against a pod of
#: a provider without the hook and expects a prompt "not implemented" answer.
_MISSING_HOOK_COMMANDS: dict[str, tuple[str, ...]] = {
    "get_container_logs": ("logs", "{pod}", "-c", "main"),
    "run_in_container": ("exec", "{pod}", "-c", "main", "--", "true"),
    "attach_to_container": ("attach", "{pod}", "-c", "main"),
    "port_forward": ("port-forward", "pod/{pod}", "{local}:8080"),
    "get_stats_summary": ("get", "--raw", "/api/v1/nodes/{node}/proxy/stats/summary"),
}


def _token(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


class ProviderConformance:
    """The checks. Set `profile` in a subclass named `Test...`."""

    #: What to test; a class-scoped `conformance_profile` fixture may provide it instead.
    profile: ClassVar[ConformanceProfile | None] = None

    # --- fixtures shared by the checks of one class ---------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def shared_pod(cls, conformance_node: ConformanceNode, conformance_namespace: str) -> str:
        """A running pod that checks of the kubelet API use (the profile's `runs` workload)."""
        node = conformance_node
        node.create(conformance_namespace, node.manifest("shared", node.profile.workloads.runs()))
        node.wait_running(conformance_namespace, "shared")
        return "shared"

    @pytest.fixture(scope="class")
    @classmethod
    def configured_pod(
        cls, conformance_node: ConformanceNode, conformance_namespace: str
    ) -> dict[str, str]:
        """A running pod with env from a literal, a fieldRef, a ConfigMap and a Secret, and a
        ConfigMap volume; returns the values it must see (env names, and `_FILE` for the file)."""
        node, namespace = conformance_node, conformance_namespace
        expected = {
            "CONFORMANCE_LITERAL": _token("literal"),
            "CONFORMANCE_POD_NAME": "configured",
            "CONFORMANCE_FROM_CONFIG_MAP": _token("config"),
            "CONFORMANCE_FROM_SECRET": _token("secret"),
            _FILE: _token("file"),
        }
        node.create(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "conformance"},
                "data": {"value": expected["CONFORMANCE_FROM_CONFIG_MAP"], _FILE: expected[_FILE]},
            },
        )
        node.create(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "conformance"},
                "stringData": {"value": expected["CONFORMANCE_FROM_SECRET"]},
            },
        )
        workloads = node.profile.workloads
        workload = workloads.reports(_MOUNT, _FILE) or workloads.runs()
        env = [
            {"name": "CONFORMANCE_LITERAL", "value": expected["CONFORMANCE_LITERAL"]},
            {
                "name": "CONFORMANCE_POD_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
            {
                "name": "CONFORMANCE_FROM_CONFIG_MAP",
                "valueFrom": {"configMapKeyRef": {"name": "conformance", "key": "value"}},
            },
            {
                "name": "CONFORMANCE_FROM_SECRET",
                "valueFrom": {"secretKeyRef": {"name": "conformance", "key": "value"}},
            },
        ]
        manifest = node.manifest(
            "configured",
            workload,
            container={
                "env": env,
                "volumeMounts": [{"name": "config", "mountPath": _MOUNT, "readOnly": True}],
            },
            volumes=[{"name": "config", "configMap": {"name": "conformance"}}],
        )
        node.create(namespace, manifest)
        node.wait_running(namespace, "configured")
        return expected

    # --- pod lifecycle ----------------------------------------------------------------------------

    def test_pod_runs_and_is_ready_with_container_statuses(
        self, conformance_node: ConformanceNode, conformance_namespace: str
    ) -> None:
        """A pod bound to the node goes Running and Ready, with a running, ready status per
        container, its IPs, and an entry in the provider's `/runningpods`."""
        node, namespace = conformance_node, conformance_namespace
        workload = node.profile.workloads.runs()
        manifest = node.manifest("lifecycle", workload)
        second = {**manifest["spec"]["containers"][0], "name": "sidecar"}
        manifest["spec"]["containers"].append(second)
        node.create(namespace, manifest)
        pod = node.wait_running(namespace, "lifecycle")

        status = pod["status"]
        statuses = container_statuses(pod)
        assert sorted(statuses) == ["main", "sidecar"], status.get("containerStatuses")
        for name, container in statuses.items():
            assert container.get("ready") is True, (name, container)
            assert "running" in (container.get("state") or {}), (name, container)
            assert container.get("image"), (name, container)
        assert status.get("startTime"), status
        assert status.get("hostIP"), status
        if node.profile.reports_pod_ip:
            assert status.get("podIP"), "a Running pod has no status.podIP"
            assert status.get("podIPs") == [{"ip": status["podIP"]}] or status["podIP"] in [
                i.get("ip") for i in status.get("podIPs") or []
            ], status
        uid = pod["metadata"]["uid"]
        listed = [p for p in node.running_pods() if p[2] == uid]
        assert listed == [(namespace, "lifecycle", uid, ("main", "sidecar"))], node.running_pods()

    @pytest.mark.parametrize(("exit_code", "phase"), [(0, "Succeeded"), (3, "Failed")])
    def test_container_exit_code_decides_the_phase(
        self,
        conformance_node: ConformanceNode,
        conformance_namespace: str,
        exit_code: int,
        phase: str,
    ) -> None:
        """With restartPolicy Never, a container that exits 0 leaves the pod Succeeded, one that
        exits non-zero leaves it Failed, and the container's terminated state has the code."""
        node = conformance_node
        workload = node.profile.workloads.exits(exit_code)
        if workload is None:
            pytest.skip(f"the profile's workloads cannot express a container exiting {exit_code}")
        name = f"exits-{exit_code}"
        node.create(conformance_namespace, node.manifest(name, workload, restartPolicy="Never"))
        pod = node.wait_for_pod(
            conformance_namespace,
            name,
            phase_in("Succeeded", "Failed"),
            "to finish",
        )
        assert pod["status"]["phase"] == phase, pod["status"]
        terminated = (container_statuses(pod)["main"].get("state") or {}).get("terminated")
        assert terminated is not None, pod["status"]
        assert terminated.get("exitCode") == exit_code, terminated

    # --- env and volumes ------------------------------------------------------------------------

    def test_env_reaches_the_workload(
        self,
        conformance_node: ConformanceNode,
        conformance_namespace: str,
        configured_pod: dict[str, str],
    ) -> None:
        """A literal value, a fieldRef (metadata.name), a ConfigMap key and a Secret key are in the
        container's environment, seen through `kubectl exec` and/or the container's log."""
        node = conformance_node
        wanted = {k: v for k, v in configured_pod.items() if k != _FILE}
        ways = []
        if "run_in_container" in node.capabilities:
            command = node.profile.workloads.env_command()
            result = node.kubectl(
                "exec", "-n", conformance_namespace, "configured", "-c", "main", "--", *command
            )
            assert result.returncode == 0, result.stderr
            seen = env_lines(result.stdout)
            assert {k: seen.get(k) for k in wanted} == wanted, result.stdout
            ways.append("exec")
        if self._reports_in_log(node):
            self._wait_for_log(
                node,
                conformance_namespace,
                "configured",
                [f"{k}={v}" for k, v in wanted.items()],
            )
            ways.append("logs")
        if not ways:
            pytest.skip(self._unverifiable(node))

    def test_config_map_volume_file_reaches_the_workload(
        self,
        conformance_node: ConformanceNode,
        conformance_namespace: str,
        configured_pod: dict[str, str],
    ) -> None:
        """A key of a ConfigMap volume is a file at the mount path, with the key's value, seen
        through `kubectl exec` and/or the container's log."""
        node = conformance_node
        ways = []
        command = node.profile.workloads.read_command(_MOUNT, _FILE)
        if "run_in_container" in node.capabilities and command is not None:
            result = node.kubectl(
                "exec", "-n", conformance_namespace, "configured", "-c", "main", "--", *command
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == configured_pod[_FILE], result.stdout
            ways.append("exec")
        if self._reports_in_log(node):
            self._wait_for_log(node, conformance_namespace, "configured", [configured_pod[_FILE]])
            ways.append("logs")
        if not ways:
            if command is None:
                pytest.skip("the profile's workloads say containers do not see volume files")
            pytest.skip(self._unverifiable(node))

    # --- deletion -------------------------------------------------------------------------------

    def test_graceful_deletion_ends_within_the_grace_period(
        self, conformance_node: ConformanceNode, conformance_namespace: str
    ) -> None:
        """`kubectl delete` of a pod whose workload stops on SIGTERM: the pod is gone from the API
        and from the provider's `/runningpods` within its grace period."""
        node, namespace = conformance_node, conformance_namespace
        grace = node.profile.grace_period_seconds
        manifest = node.manifest(
            "graceful", node.profile.workloads.runs(), terminationGracePeriodSeconds=grace
        )
        node.create(namespace, manifest)
        uid = node.wait_running(namespace, "graceful")["metadata"]["uid"]
        node.kubectl("delete", "pod", "graceful", "-n", namespace, "--wait=false")
        wait_until(
            lambda: node.pod(namespace, "graceful") is None and uid not in node.running_uids(),
            grace,
            f"the pod to leave the API and the provider within its {grace} s grace period",
            interval=0.5,
        )

    def test_forced_deletion_stops_the_pod_in_the_provider(
        self, conformance_node: ConformanceNode, conformance_namespace: str
    ) -> None:
        """`kubectl delete --grace-period=0 --force` removes the API object at once; the provider
        stops the pod and it leaves `/runningpods`."""
        node, namespace = conformance_node, conformance_namespace
        node.create(namespace, node.manifest("forced", node.profile.workloads.runs()))
        uid = node.wait_running(namespace, "forced")["metadata"]["uid"]
        result = node.kubectl(
            "delete", "pod", "forced", "-n", namespace, "--grace-period=0", "--force"
        )
        assert result.returncode == 0, result.stderr
        assert node.pod(namespace, "forced") is None
        wait_until(
            lambda: uid not in node.running_uids(),
            node.profile.timeout,
            "the force-deleted pod to leave the provider's /runningpods",
            interval=0.5,
        )

    # --- bad input ------------------------------------------------------------------------------

    def test_rejected_pod_fails_with_a_reason_and_others_still_run(
        self, conformance_node: ConformanceNode, conformance_namespace: str
    ) -> None:
        """A pod the provider refuses with InvalidInput ends Failed with a reason and a message
        (not retried for ever), and the agent goes on running other pods."""
        node, namespace = conformance_node, conformance_namespace
        workload = node.profile.workloads.rejected()
        if workload is None:
            pytest.skip("the profile's workloads have no pod this provider rejects")
        node.create(namespace, node.manifest("rejected", workload))
        pod = node.wait_for_pod(namespace, "rejected", phase_in("Failed"), "to end Failed")
        status = pod["status"]
        assert status.get("reason"), status
        assert workload.message in (status.get("message") or ""), status
        node.create(namespace, node.manifest("after-rejected", node.profile.workloads.runs()))
        node.wait_running(namespace, "after-rejected")

    # --- the kubelet API --------------------------------------------------------------------------

    def test_logs_reach_kubectl(
        self, conformance_node: ConformanceNode, conformance_namespace: str
    ) -> None:
        """What the container writes is what `kubectl logs` shows."""
        node = conformance_node
        self._require(node, "get_container_logs")
        text = _token("logged")
        workload = node.profile.workloads.prints(text)
        if workload is None:
            pytest.skip("the profile's workloads cannot express a container printing a line")
        node.create(conformance_namespace, node.manifest("logger", workload))
        node.wait_running(conformance_namespace, "logger")
        self._wait_for_log(node, conformance_namespace, "logger", [text])

    def test_exec_runs_commands_with_stdin_and_exit_codes(
        self, conformance_node: ConformanceNode, conformance_namespace: str, shared_pod: str
    ) -> None:
        """`kubectl exec` runs a command in the container: its output comes back, stdin reaches
        it, and its exit code is kubectl's."""
        node, workloads = conformance_node, conformance_node.profile.workloads
        self._require(node, "run_in_container")
        exec_ = ("exec", "-n", conformance_namespace, shared_pod, "-c", "main")
        text = _token("echoed")
        echoed = node.kubectl(*exec_, "--", *workloads.echo_command(text))
        assert (echoed.returncode, echoed.stdout) == (0, f"{text}\n"), echoed.stderr
        piped = node.kubectl(*exec_, "-i", "--", *workloads.stdin_command(), input=f"{text}\n")
        assert (piped.returncode, piped.stdout) == (0, f"{text}\n"), piped.stderr
        failed = node.kubectl(*exec_, "--", *workloads.exit_command(3))
        assert failed.returncode == 3, (failed.stdout, failed.stderr)

    def test_attach_connects_to_the_running_container(
        self, conformance_node: ConformanceNode, conformance_namespace: str
    ) -> None:
        """`kubectl attach -i` reaches the container's main process: what is typed comes back."""
        node = conformance_node
        self._require(node, "attach_to_container")
        workload = node.profile.workloads.echoes_stdin()
        if workload is None:
            pytest.skip("the profile's workloads cannot express a container echoing its stdin")
        node.create(conformance_namespace, node.manifest("attached", workload))
        node.wait_running(conformance_namespace, "attached")
        text = _token("typed").encode()
        args = ("attach", "-i", "-n", conformance_namespace, "attached", "-c", "main")
        with kubectl_session(node.cluster, args) as session:
            assert session.stdin is not None
            session.stdin.write(text + b"\n")
            session.stdin.flush()
            read_until(session, text, node.profile.timeout)

    def test_port_forward_carries_bytes_both_ways(
        self, conformance_node: ConformanceNode, conformance_namespace: str
    ) -> None:
        """`kubectl port-forward` to a port the container serves: bytes sent through the local
        port reach it, and its answer comes back."""
        node = conformance_node
        self._require(node, "port_forward")
        port = free_port("0.0.0.0")  # host-network providers listen on this machine
        workload = node.profile.workloads.serves(port)
        if workload is None:
            pytest.skip("the profile's workloads cannot express a container serving TCP")
        node.create(conformance_namespace, node.manifest("server", workload))
        node.wait_running(conformance_namespace, "server")
        local = free_port()
        payload = f"{_token('forwarded')}\n".encode()
        args = ("port-forward", "-n", conformance_namespace, "pod/server", f"{local}:{port}")
        with kubectl_session(node.cluster, args) as session:
            read_until(session, b"Forwarding from", node.profile.timeout)
            answer = echo_over_tcp(local, payload, node.profile.timeout)
        assert answer == payload

    def test_stats_summary_describes_the_node(
        self, conformance_node: ConformanceNode, shared_pod: str
    ) -> None:
        """`/stats/summary` (what `kubectl top` reads) answers with this node's summary."""
        node = conformance_node
        self._require(node, "get_stats_summary")
        raw = node.kubectl("get", "--raw", f"/api/v1/nodes/{node.name}/proxy/stats/summary")
        assert raw.returncode == 0, raw.stderr
        summary = json.loads(raw.stdout)
        assert summary["node"]["nodeName"] == node.name, summary.get("node")

    @pytest.mark.parametrize("hook", sorted(_MISSING_HOOK_COMMANDS))
    def test_missing_hook_answers_not_implemented(
        self,
        conformance_node: ConformanceNode,
        conformance_namespace: str,
        shared_pod: str,
        hook: str,
    ) -> None:
        """A kubelet API feature the provider does not implement answers at once, with an error
        naming it as not implemented (HTTP 501), never a hang or a generic failure."""
        node = conformance_node
        if hook in node.capabilities:
            pytest.skip(f"the provider implements {hook}")
        fill = {"pod": shared_pod, "node": node.name, "local": str(free_port())}
        command = [part.format(**fill) for part in _MISSING_HOOK_COMMANDS[hook]]
        result = node.kubectl("-n", conformance_namespace, *command)
        assert result.returncode != 0, result.stdout
        assert "not implemented" in result.stderr.lower(), result.stderr
        assert hook in result.stderr, result.stderr

    # --- restarts -------------------------------------------------------------------------------

    def test_restarted_agent_adopts_running_pods(
        self, conformance_node: ConformanceNode, conformance_namespace: str
    ) -> None:
        """After `kill -9` of the agent, an agent started again on the same state directory adopts
        the pod: the same pod, still Running and Ready, its containers not started again, listed
        once by the provider."""
        node, namespace = conformance_node, conformance_namespace
        if not node.profile.survives_restart:
            pytest.skip("the profile says pods do not survive an agent restart")
        node.create(namespace, node.manifest("survivor", node.profile.workloads.runs()))
        before = node.wait_running(namespace, "survivor")
        node.crash_and_restart()
        # The new agent serves pods: a pod created now runs. Whatever it did to the survivor at
        # start-up (adopting it, or wrongly creating it again) is done by then.
        node.create(namespace, node.manifest("newcomer", node.profile.workloads.runs()))
        node.wait_running(namespace, "newcomer")
        after = node.wait_running(namespace, "survivor")
        uid = before["metadata"]["uid"]
        assert after["metadata"]["uid"] == uid
        assert _starts(after) == _starts(before), (
            "a container was started again (start, ID, restarts)"
        )
        assert [p for p in node.running_pods() if p[2] == uid] == [
            (namespace, "survivor", uid, ("main",))
        ]

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _require(node: ConformanceNode, hook: str) -> None:
        if hook not in node.capabilities:
            pytest.skip(f"the provider does not implement {hook} (checked as a missing hook)")

    @staticmethod
    def _reports_in_log(node: ConformanceNode) -> bool:
        return (
            "get_container_logs" in node.capabilities
            and node.profile.workloads.reports(_MOUNT, _FILE) is not None
        )

    @staticmethod
    def _unverifiable(node: ConformanceNode) -> str:
        if "get_container_logs" in node.capabilities:
            return "no run_in_container, and the profile's workloads cannot `report` to the log"
        return "the provider has neither run_in_container nor get_container_logs to show it"

    @staticmethod
    def _wait_for_log(node: ConformanceNode, namespace: str, pod: str, lines: list[str]) -> None:
        def logged() -> bool:
            result = node.kubectl("logs", "-n", namespace, pod, "-c", "main")
            assert result.returncode == 0, result.stderr
            have = result.stdout.splitlines()
            return all(any(line in seen for seen in have) for line in lines)

        wait_until(logged, node.profile.timeout, f"{lines} in the log of {pod}", interval=0.5)


def _starts(pod: Pod) -> dict[str, Any]:
    """Per container: when it started, its ID and restart count (a second start changes them)."""
    return {
        name: (
            (status.get("state") or {}).get("running", {}).get("startedAt"),
            status.get("containerID"),
            status.get("restartCount"),
        )
        for name, status in container_statuses(pod).items()
    }
