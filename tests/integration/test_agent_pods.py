"""Pods bound to the virtual node run through the (mock) provider, correctly, at scale."""

from __future__ import annotations

import json
import time
from typing import Any

from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import TOLERATION, AgentFactory, condition, create, events_for, pod, pod_manifest

PERSIST = {"persist": True}


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"type": "virtual-kubelet"},
                    "tolerations": [TOLERATION],
                    "containers": [{"name": "web", "image": "registry.invalid/web:1"}],
                },
            },
        },
    }


def _running_ready(cluster: DevCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running"
        and (condition(p, "Ready") or {}).get("status") == "True"
    ]


def test_deployment_of_200_is_scheduled_runs_and_scales_to_zero(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config={**PERSIST, "pods": "500"})
    create(devcluster, kube_namespace, _deployment("web", 200))
    wait_until(
        lambda: len(_running_ready(devcluster, kube_namespace, "app=web")) == 200,
        180,
        "200 replicas Running and Ready",
    )
    pods = devcluster.get_json("pods", "-n", kube_namespace, "-l", "app=web")["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {agent.node_name}  # the real scheduler chose it
    assert all(p["status"]["podIP"] and p["status"]["hostIP"] == devcluster.node_ip for p in pods)
    in_provider = [k for k in agent.mock_pods() if k.startswith(kube_namespace + "/")]
    assert len(in_provider) == 200

    devcluster.kubectl("scale", "deployment", "web", "-n", kube_namespace, "--replicas=0")
    wait_until(
        lambda: not devcluster.get_json("pods", "-n", kube_namespace, "-l", "app=web")["items"],
        180,
        "every pod gone from the API",
    )
    wait_until(
        lambda: not [k for k in agent.mock_pods() if k.startswith(kube_namespace + "/")],
        30,
        "every pod gone from the provider",
    )


def test_job_pod_completes_when_the_mock_finishes_it(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config={"complete_jobs_after_seconds": 1})
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeName": agent.node_name,
                    "tolerations": [TOLERATION],
                    "containers": [{"name": "task", "image": "registry.invalid/task:1"}],
                }
            },
        },
    }
    create(devcluster, kube_namespace, job)

    def succeeded() -> bool:
        status = devcluster.get_json("job", "once", "-n", kube_namespace).get("status", {})
        return status.get("succeeded") == 1

    wait_until(succeeded, 90, "the Job to succeed")
    (job_pod,) = devcluster.get_json("pods", "-n", kube_namespace, "-l", "job-name=once")["items"]
    assert job_pod["status"]["phase"] == "Succeeded"
    terminated = job_pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"


def test_graceful_deletion_waits_for_the_provider_and_force_deletion_cleans_up(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config=PERSIST)
    node = agent.node_name
    slow = pod_manifest(
        "slow",
        node,
        annotations={"mock.virtual-kubelet.io/stop-seconds": "3"},
        terminationGracePeriodSeconds=60,
    )
    create(devcluster, kube_namespace, slow)
    create(devcluster, kube_namespace, pod_manifest("forced", node))
    for name in ("slow", "forced"):
        wait_until(
            lambda n=name: (
                (pod(devcluster, kube_namespace, n) or {}).get("status", {}).get("phase")
                == "Running"
            ),
            60,
            f"{name} Running",
        )

    started = time.monotonic()
    devcluster.kubectl("delete", "pod", "slow", "-n", kube_namespace, "--wait=false")
    terminating = pod(devcluster, kube_namespace, "slow")
    assert terminating is not None
    assert terminating["metadata"].get("deletionTimestamp")
    wait_until(lambda: pod(devcluster, kube_namespace, "slow") is None, 45, "slow to be removed")
    elapsed = time.monotonic() - started
    # Removed once the provider reported it stopped (~3 s), not at the end of the 60 s grace.
    assert 2.5 <= elapsed < 30, elapsed
    assert f"{kube_namespace}/slow" not in agent.mock_pods()

    devcluster.kubectl(
        "delete", "pod", "forced", "-n", kube_namespace, "--grace-period=0", "--force"
    )
    assert pod(devcluster, kube_namespace, "forced") is None
    wait_until(
        lambda: f"{kube_namespace}/forced" not in agent.mock_pods(),
        30,
        "the force-deleted pod to leave the provider",
    )


def test_a_shortened_grace_period_removes_the_pod_at_the_new_deadline(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config=PERSIST)
    stubborn = pod_manifest(
        "stubborn",
        agent.node_name,
        annotations={"mock.virtual-kubelet.io/stop-seconds": "300"},
        terminationGracePeriodSeconds=300,
    )
    create(devcluster, kube_namespace, stubborn)
    _wait_running(devcluster, kube_namespace, "stubborn")
    devcluster.kubectl("delete", "pod", "stubborn", "-n", kube_namespace, "--wait=false")
    # A second delete with a shorter grace period, as `kubectl delete --grace-period` allows.
    started = time.monotonic()
    devcluster.kubectl(
        "delete", "pod", "stubborn", "-n", kube_namespace, "--grace-period=3", "--wait=false"
    )
    wait_until(
        lambda: pod(devcluster, kube_namespace, "stubborn") is None, 60, "stubborn to be removed"
    )
    # Removed when the 3 s (+ the provider's 2 s) ran out, not at the end of the first 300 s.
    assert time.monotonic() - started < 30


def test_pod_deleted_while_agent_down_is_cleaned_up_on_restart(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config=PERSIST)
    create(devcluster, kube_namespace, pod_manifest("victim", agent.node_name))
    wait_until(
        lambda: (
            (pod(devcluster, kube_namespace, "victim") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        60,
        "victim Running",
    )
    assert agent.stop() == 0
    devcluster.kubectl("delete", "pod", "victim", "-n", kube_namespace, "--wait=false")
    # Nobody runs the pod now: it stays Terminating until a kubelet finishes the deletion.
    assert pod(devcluster, kube_namespace, "victim")["metadata"]["deletionTimestamp"]  # type: ignore[index]
    assert f"{kube_namespace}/victim" in agent.mock_pods()

    start_agent(name=agent.node_name, provider_config=PERSIST)
    wait_until(lambda: pod(devcluster, kube_namespace, "victim") is None, 60, "victim removed")
    assert f"{kube_namespace}/victim" not in agent.mock_pods()


def test_kill_9_mid_rollout_then_restart_creates_nothing_twice(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    config = {**PERSIST, "pods": "500"}
    agent = start_agent(provider_config=config)
    create(devcluster, kube_namespace, _deployment("roll", 200))
    wait_until(
        lambda: len([k for k in agent.mock_pods() if k.startswith(kube_namespace)]) >= 50,
        120,
        "the rollout to be under way",
    )
    agent.kill()
    restarted = start_agent(name=agent.node_name, provider_config=config)
    wait_until(
        lambda: len(_running_ready(devcluster, kube_namespace, "app=roll")) == 200,
        240,
        "200 replicas Running after the restart",
    )
    api_uids = {
        p["metadata"]["uid"]
        for p in devcluster.get_json("pods", "-n", kube_namespace, "-l", "app=roll")["items"]
    }
    in_provider = {
        p["metadata"]["uid"]
        for k, p in restarted.mock_pods().items()
        if k.startswith(kube_namespace + "/")
    }
    assert in_provider == api_uids
    assert len(in_provider) == 200
    creations = [u for u in restarted.mock_creations() if u in api_uids]
    assert len(creations) == len(set(creations)) == 200, "a pod was created twice"


def test_transient_failures_converge_and_permanent_ones_fail_the_pod(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(args=["--provider-retry-limit", "3"])
    node = agent.node_name
    create(
        devcluster,
        kube_namespace,
        pod_manifest("flaky", node, annotations={"mock.virtual-kubelet.io/fail-create": "2"}),
    )
    create(
        devcluster,
        kube_namespace,
        pod_manifest("doomed", node, annotations={"mock.virtual-kubelet.io/fail-create": "always"}),
    )
    wait_until(
        lambda: (
            (pod(devcluster, kube_namespace, "flaky") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        90,
        "flaky to converge to Running",
    )
    flaky = pod(devcluster, kube_namespace, "flaky")
    assert (condition(flaky, "virtual-kubelet.io/ProviderSynced") or {}).get("status") == "True"
    reasons = [e["reason"] for e in events_for(devcluster, kube_namespace, "flaky")]
    assert "ProviderCreateFailed" in reasons

    def failed() -> dict[str, Any] | None:
        current = pod(devcluster, kube_namespace, "doomed")
        return current if current and current["status"].get("phase") == "Failed" else None

    doomed = wait_until(failed, 90, "doomed to end Failed")
    assert doomed["status"]["reason"] == "ProviderFailed"
    assert "gave up after 3 failed attempts" in doomed["status"]["message"]
    assert "injected create failure" in doomed["status"]["message"]


def test_failed_update_never_turns_a_running_pod_pending(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(args=["--provider-retry-limit", "2"])
    create(
        devcluster,
        kube_namespace,
        pod_manifest(
            "steady", agent.node_name, annotations={"mock.virtual-kubelet.io/fail-update": "always"}
        ),
    )
    wait_until(
        lambda: (
            (pod(devcluster, kube_namespace, "steady") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        60,
        "steady Running",
    )
    # An annotation change is a spec change for the provider: it gets update_pod, which fails.
    devcluster.kubectl("annotate", "pod", "steady", "-n", kube_namespace, "touch=1")
    wait_until(
        lambda: (
            "ProviderUpdateFailed"
            in [e["reason"] for e in events_for(devcluster, kube_namespace, "steady")]
        ),
        60,
        "the failed update to be reported",
    )
    wait_until(
        lambda: (
            "gave up updating"
            in " ".join(e["message"] for e in events_for(devcluster, kube_namespace, "steady"))
        ),
        60,
        "the agent to give up on the update",
    )
    current = pod(devcluster, kube_namespace, "steady")
    assert current is not None
    assert current["status"]["phase"] == "Running"
    assert (condition(current, "Ready") or {}).get("status") == "True"


def test_status_patch_keeps_labels_and_annotations_set_meanwhile(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent()
    create(
        devcluster,
        kube_namespace,
        pod_manifest(
            "shared", agent.node_name, annotations={"mock.virtual-kubelet.io/startup-seconds": "4"}
        ),
    )
    wait_until(lambda: pod(devcluster, kube_namespace, "shared"), 30, "shared to exist")
    # Another client writes metadata while the provider is still starting the pod...
    devcluster.kubectl("label", "pod", "shared", "-n", kube_namespace, "owner=someone-else")
    devcluster.kubectl("annotate", "pod", "shared", "-n", kube_namespace, "note=keep-me")
    # ...and the provider's later status writes must not undo it.
    running = wait_until(
        lambda: (
            (p := pod(devcluster, kube_namespace, "shared"))
            and p["status"].get("phase") == "Running"
            and p
        ),
        60,
        "shared Running",
    )
    assert running["metadata"]["labels"]["owner"] == "someone-else"
    assert running["metadata"]["annotations"]["note"] == "keep-me"


def test_status_ips_and_conditions_look_like_a_kubelets(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent()
    create(devcluster, kube_namespace, pod_manifest("shape", agent.node_name))
    current = wait_until(
        lambda: (
            (p := pod(devcluster, kube_namespace, "shape"))
            and p["status"].get("phase") == "Running"
            and p
        ),
        60,
        "shape Running",
    )
    status = current["status"]
    assert status["hostIP"] == devcluster.node_ip
    assert status["podIPs"] == [{"ip": status["podIP"]}]
    for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled"):
        assert (condition(current, kind) or {}).get("status") == "True", kind
    (container,) = status["containerStatuses"]
    assert container["ready"] is True
    assert "running" in container["state"]
    assert json.loads(json.dumps(status))  # plain JSON all the way down


def test_polled_provider_reports_status_and_finishes_deletions(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config={"push": False})
    assert "polling every 5 s" in agent.log()
    create(
        devcluster,
        kube_namespace,
        pod_manifest(
            "polled", agent.node_name, annotations={"mock.virtual-kubelet.io/stop-seconds": "2"}
        ),
    )
    _wait_running(devcluster, kube_namespace, "polled")
    devcluster.kubectl("delete", "pod", "polled", "-n", kube_namespace, "--wait=false")
    wait_until(lambda: pod(devcluster, kube_namespace, "polled") is None, 60, "polled deleted")


def _wait_running(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    return wait_until(
        lambda: (
            (p := pod(cluster, namespace, name)) and p["status"].get("phase") == "Running" and p
        ),
        60,
        f"{name} Running",
    )
