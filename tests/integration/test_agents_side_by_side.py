"""Several agents on one host, and an agent whose node address changes: each node's kubelet port
is its own, and its serving certificate always matches the node it serves."""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess

from .conftest import AgentFactory, create, pod, pod_manifest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="node addresses need root")


def _free_on(*addresses: str) -> int:
    """A port free on every one of `addresses`."""
    while True:
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = int(s.getsockname()[1])
        try:
            for address in addresses[1:]:
                with socket.socket() as s:
                    s.bind((address, port))
            return port
        except OSError:
            continue


def _run_pod(cluster: DevCluster, namespace: str, name: str, node: str) -> None:
    create(cluster, namespace, pod_manifest(name, node))
    wait_until(
        lambda: (pod(cluster, namespace, name) or {}).get("status", {}).get("phase") == "Running",
        60,
        f"pod {name} to run",
    )


def _served_certificate(address: str, port: int) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((address, port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_two_agents_on_one_host_each_serve_their_own_pods_on_the_same_port(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    nodes = [f"vk-side-{secrets.token_hex(3)}" for _ in range(2)]
    addresses = [devcluster.node_address_for(node) for node in nodes]
    assert addresses[0] != addresses[1]
    port = _free_on(*addresses)
    agents = []
    for node, address in zip(nodes, addresses, strict=True):
        # No --kubelet-listen-address: the default (the node's address) is what is tested.
        agent = start_agent(name=node, env={"VKUBELET_POD_IP": address, "KUBELET_PORT": str(port)})
        agent.approve_serving_certificate()
        agents.append(agent)
    for agent in agents:
        _run_pod(devcluster, kube_namespace, f"pod-of-{agent.node_name}", agent.node_name)
    for agent in agents:
        name = f"pod-of-{agent.node_name}"
        logs = devcluster.kubectl("logs", "-n", kube_namespace, name).stdout
        assert f"of pod {kube_namespace}/{name} started" in logs
        listed = json.loads(
            devcluster.kubectl(
                "get", "--raw", f"/api/v1/nodes/{agent.node_name}/proxy/runningpods"
            ).stdout
        )
        assert [p["metadata"]["name"] for p in listed["items"]] == [name]

    # A third agent on the first one's address and port cannot bind: it stops at once and says
    # where and who, instead of registering a node whose kubelet port is someone else's.
    third = start_agent(
        ready=False, env={"VKUBELET_POD_IP": addresses[0], "KUBELET_PORT": str(port)}
    )
    assert third.process is not None
    assert third.process.wait(60) == 1
    log = third.log()
    assert f"cannot listen on {addresses[0]}:{port} for the kubelet API" in log
    assert agents[0].process is not None
    assert f"in use by pid {agents[0].process.pid} " in log
    assert devcluster.kubectl("get", "node", third.node_name, check=False).returncode != 0


def test_a_changed_node_address_or_name_gets_a_new_serving_certificate(
    devcluster: DevCluster, kube_namespace: str, tmp_path: Path
) -> None:
    node = f"vk-moved-{secrets.token_hex(3)}"
    first, second = devcluster.node_address_for(node), devcluster.node_address_for(node + "-b")
    port = _free_on(first, second)
    workdir = tmp_path / "agent"  # one state directory for every start below
    env = {"KUBELET_PORT": str(port)}
    agent = AgentProcess(devcluster, node, workdir, env={**env, "VKUBELET_POD_IP": first})
    try:
        agent.start().wait_ready()
        agent.approve_serving_certificate()
        _run_pod(devcluster, kube_namespace, "p", node)
        assert "started" in devcluster.kubectl("logs", "-n", kube_namespace, "p").stdout
        agent.stop()

        # Same node, same state directory, another address: the kept certificate (valid for the
        # first address only) must not be served again.
        agent = AgentProcess(devcluster, node, workdir, env={**env, "VKUBELET_POD_IP": second})
        agent.start().wait_ready()
        wait_until(
            lambda: "not reusing the serving certificate" in agent.log(), 30, "the reason logged"
        )
        assert f"not valid for {second}" in agent.log()
        agent.approve_serving_certificate()
        wait_until(
            lambda: (
                devcluster.kubectl(
                    "get", "node", node, "-o", "jsonpath={.status.addresses[0].address}"
                ).stdout
                == second
            ),
            30,
            "the node's new address",
        )
        served = _served_certificate(second, port)
        sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert second in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        assert "started" in devcluster.kubectl("logs", "-n", kube_namespace, "p").stdout
        agent.stop()

        # Another node name on the same state directory: the certificate names the old node.
        renamed = node + "-b"
        agent = AgentProcess(devcluster, renamed, workdir, env={**env, "VKUBELET_POD_IP": second})
        agent.start().wait_ready()
        wait_until(
            lambda: f"issued to system:node:{node}, not system:node:{renamed}" in agent.log(),
            30,
            "the reason logged",
        )
        agent.approve_serving_certificate()
        cn = _served_certificate(second, port).subject.get_attributes_for_oid(
            x509.oid.NameOID.COMMON_NAME
        )
        assert cn[0].value == f"system:node:{renamed}"
    finally:
        agent.stop()
        agent.cleanup()
        for name in (node, node + "-b"):
            devcluster.kubectl("delete", "node", name, "--wait=false", check=False)
