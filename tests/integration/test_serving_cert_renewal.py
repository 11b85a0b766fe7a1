"""The kubelet port's serving certificate is renewed through a new CSR before it expires, without a
restart, and `kubectl logs` keeps working across the switch.

Runs its own control plane whose signer issues 2-minute certificates (kube-controller-manager
`--cluster-signing-duration=2m`), so the renewal happens within the test: the signer backdates
NotBefore by 5 minutes, the agent renews at 80% of NotBefore..NotAfter (never sooner than 60 s
after the previous certificate), i.e. about 60 s after start-up.
"""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.pytest_plugin import config_for_tests

from .conftest import create, pod, pod_manifest


@pytest.fixture(scope="module")
def short_cert_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    config = config_for_tests(
        extra_args={"kube-controller-manager": ["--cluster-signing-duration=2m"]}
    )
    with DevCluster(tmp_path_factory.mktemp("short-certs"), config) as cluster:
        yield cluster


def _served_certificate(host: str, port: int) -> x509.Certificate:
    pem = ssl.get_server_certificate((host, port), timeout=10)  # unverified: only reads it
    return x509.load_pem_x509_certificate(pem.encode())


def _csrs(cluster: DevCluster, node: str) -> list[dict]:
    listing = json.loads(
        cluster.kubectl("get", "csr", "-l", f"virtual-kubelet.io/node={node}", "-o", "json").stdout
    )
    return list(listing["items"])


def test_serving_certificate_is_renewed_before_expiry(
    short_cert_cluster: DevCluster, tmp_path: Path
) -> None:
    cluster = short_cert_cluster
    node = f"vk-renew-{secrets.token_hex(3)}"
    agent = AgentProcess(cluster, node, tmp_path / node).start()
    namespace = f"renew-{secrets.token_hex(3)}"
    try:
        agent.wait_ready()
        first_csr = agent.approve_serving_certificate()
        first = _served_certificate(cluster.node_ip, agent.kubelet_port)
        lifetime = first.not_valid_after_utc - first.not_valid_before_utc
        assert lifetime.total_seconds() < 8 * 60, "the signer did not issue a short certificate"

        cluster.kubectl("create", "namespace", namespace)
        create(
            cluster,
            namespace,
            pod_manifest(
                "talker", node, annotations={"mock.virtual-kubelet.io/log-every-seconds": "0.5"}
            ),
        )
        wait_until(
            lambda: (
                (pod(cluster, namespace, "talker") or {}).get("status", {}).get("phase")
                == "Running"
            ),
            60,
            "the pod to run",
        )
        assert cluster.kubectl("logs", "-n", namespace, "talker", "--tail=1").stdout.strip()

        # A second CSR appears before the first certificate expires; approve it like an approver.
        def renewal_requested() -> str | None:
            for csr in _csrs(cluster, node):
                name = csr["metadata"]["name"]
                if name != first_csr and not csr.get("status", {}).get("conditions"):
                    return str(name)
            return None

        second_csr = wait_until(renewal_requested, 150, "a renewal CSR")
        cluster.kubectl("certificate", "approve", second_csr)

        def switched() -> x509.Certificate | None:
            served = _served_certificate(cluster.node_ip, agent.kubelet_port)
            return served if served.serial_number != first.serial_number else None

        second = wait_until(switched, 60, "the new certificate on the kubelet port")
        assert second.not_valid_after_utc > first.not_valid_after_utc
        assert second.subject == first.subject  # system:node:<node>, O=system:nodes
        # The agent kept running (no restart), and the API server still reaches its kubelet port.
        assert agent.process is not None
        assert agent.process.poll() is None
        assert cluster.kubectl("logs", "-n", namespace, "talker", "--tail=1").stdout.strip()
        assert "renewing the kubelet serving certificate" in agent.log()
    finally:
        agent.stop()
        agent.cleanup()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
