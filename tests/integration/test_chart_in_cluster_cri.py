"""The chart's agent in the container image built here, running in a real container runtime.

`virtual_kubelet.devcluster.image` builds the agent's OCI image from Debian packages and this
checkout's wheel (no Docker engine here) and the test loads it into the private containerd of the
`cri` provider's tests. `helm install` then runs the chart's Deployment on a first virtual node
served by the **cri** provider: the agent runs in a runc container as the image's non-root user
(65532) with a read-only root filesystem, reads the service-account token that the first node
mounted into it and the in-cluster configuration, registers its own node (the **mock** provider
inside: it needs nothing but the API server), runs a pod and serves `kubectl logs` and
`kubectl exec` for it through its kubelet port, holding only the chart's least-privilege role.

The container uses the host's network (`hostNetwork: true`): the dev cluster's API server listens
on loopback and has no kube-proxy, so KUBERNETES_SERVICE_HOST/PORT name the API server's own
address, which a pod on the CNI bridge could not reach. Its pod IP is then the first node's
address, where the API server reaches the kubelet port of the node it registers.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.containerd import Containerd
from virtual_kubelet.devcluster.image import BuiltImage, ImageBuilder, ImageBuildError, import_into
from virtual_kubelet.devcluster.ports import free_port

from .conftest import TOLERATION, AgentFactory
from .cri_backend import containerd
from .test_chart_in_cluster import _check_agent_in_cluster
from .test_helm_chart import CHART, run_helm

__all__ = ["containerd"]  # the fixture, imported for pytest


@pytest.fixture(scope="session")
def agent_image(containerd: Containerd) -> BuiltImage:
    """The agent's image, built (or taken from the cache) and loaded into the containerd."""
    try:
        image = ImageBuilder().build()
        import_into(containerd, image)
    except ImageBuildError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the agent's image must build under CI=true: {exc}")
        pytest.skip(f"the agent's image cannot be built here: {exc}")
    if image.seconds:
        print(f"built {image.reference} in {image.seconds:.0f} s")
    return image


def _first_node(start_agent: AgentFactory, backend: Containerd) -> AgentProcess:
    host = start_agent(provider="cri", provider_config={"runtime_endpoint": backend.endpoint})
    host.approve_serving_certificate()
    return host


def _values(
    cluster: DevCluster, host: AgentProcess, node: str, image: BuiltImage
) -> dict[str, Any]:
    server = urlparse(cluster.server)
    repository, tag = image.reference.rsplit(":", 1)
    return {
        "provider": "mock",
        "nodeName": node,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "hostNetwork": True,
        "nodeSelector": {"kubernetes.io/hostname": host.node_name},
        "tolerations": [TOLERATION],
        # The host's network: ports no other agent of the machine holds.
        "kubeletApi": {"port": free_port(cluster.node_ip)},
        "metrics": {"port": free_port("0.0.0.0")},
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": server.hostname},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(server.port)},
        ],
    }


def _left_over(cluster: DevCluster, namespace: str, release: str, node: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    names = cluster.kubectl(
        "get",
        "all,configmaps,secrets,serviceaccounts,leases,jobs,roles,rolebindings",
        "-n",
        namespace,
        "-l",
        selector,
        "-o",
        "name",
    ).stdout.split()
    names += cluster.kubectl(
        "get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name"
    ).stdout.split()
    return names


def test_the_built_image_runs_the_agent_in_cluster_on_the_cri_provider(
    helm: Path,
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    containerd: Containerd,
    agent_image: BuiltImage,
    tmp_path: Path,
) -> None:
    host = _first_node(start_agent, containerd)
    node = f"vk-image-{secrets.token_hex(3)}"
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(_values(devcluster, host, node, agent_image)))
    release = "vk-image"
    kubeconfig = ("--kubeconfig", str(devcluster.kubeconfig))
    installed = run_helm(
        helm, "install", release, str(CHART), "-n", kube_namespace, *kubeconfig, "-f",
        str(values_file),
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    try:
        agent_pods = devcluster.get_json(
            "pods", "-n", kube_namespace, "-l", f"app.kubernetes.io/instance={release}"
        )["items"]
        assert [p["spec"]["nodeName"] for p in agent_pods] == [host.node_name]
        _check_agent_in_cluster(devcluster, kube_namespace, node, host)
        # It ran from the image, in the runtime, as the image's user.
        agent = devcluster.get_json(
            "pods", "-n", kube_namespace, "-l", f"app.kubernetes.io/instance={release}"
        )["items"][0]
        (status,) = agent["status"]["containerStatuses"]
        assert status["image"].endswith(agent_image.reference.split("/", 1)[1]), status
        assert status["containerID"].startswith("containerd://"), status
        whoami = devcluster.kubectl(
            "exec", "-n", kube_namespace, agent["metadata"]["name"], "--",
            "python3", "-c", "import os, sys; print(os.getuid(), sys.executable)",
        )  # fmt: skip
        assert whoami.stdout.split() == ["65532", "/opt/virtual-kubelet/bin/python3"]
    finally:
        started = time.monotonic()
        uninstalled = run_helm(
            helm, "uninstall", release, "-n", kube_namespace, *kubeconfig, "--wait",
            "--timeout=180s",
        )  # fmt: skip
        print(f"helm uninstall took {time.monotonic() - started:.0f} s")
    try:
        assert uninstalled.returncode == 0, uninstalled.stderr + _hook_log(
            devcluster, kube_namespace
        )
        _check_removed(devcluster, kube_namespace, release, node)
    finally:
        devcluster.kubectl("delete", "node", node, "--wait=false", check=False)


def _hook_log(cluster: DevCluster, namespace: str) -> str:
    return cluster.kubectl(
        "logs", "-n", namespace, "-l", "app.kubernetes.io/component=remove-node", "--tail=-1",
        check=False,
    ).stdout  # fmt: skip


def _check_removed(cluster: DevCluster, namespace: str, release: str, node: str) -> None:
    """After `helm uninstall`: the node, its heartbeat Lease, its pod and every object of the
    release (the pre-delete hook's included) are gone."""

    def missing(*args: str) -> bool:
        result = cluster.kubectl("get", *args, "-o", "name", check=False)
        return result.returncode != 0 and "NotFound" in result.stderr

    # The pre-delete hook deleted it before helm returned: no waiting for the Node itself.
    assert missing("node", node), "the node is still there after helm uninstall"
    assert missing("pod", "hello", "-n", namespace), "its pod was not removed"
    wait_until(
        lambda: missing("lease", node, "-n", "kube-node-lease"),
        60,
        "the node's Lease to be garbage-collected",
    )
    wait_until(
        lambda: not _left_over(cluster, namespace, release, node),
        60,
        "everything the chart created to be gone",
    )
