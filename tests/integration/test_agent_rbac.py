"""deploy/rbac.yaml is exactly enough: an agent holding only that ClusterRole runs pods fully."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import AgentFactory, create, pod, pod_manifest

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"


def test_agent_with_only_the_documented_clusterrole(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    account = f"vk-{secrets.token_hex(3)}"
    devcluster.kubectl("apply", "-f", str(RBAC))
    devcluster.kubectl("create", "serviceaccount", account, "-n", kube_namespace)
    binding = f"virtual-kubelet-{account}"
    devcluster.kubectl(
        "create",
        "clusterrolebinding",
        binding,
        "--clusterrole=virtual-kubelet",
        f"--serviceaccount={kube_namespace}:{account}",
    )
    try:
        token = devcluster.kubectl(
            "create", "token", account, "-n", kube_namespace, "--duration=1h"
        ).stdout.strip()
        config = json.loads(devcluster.kubeconfig.read_text())
        config["users"][0]["user"] = {"token": token}
        kubeconfig = tmp_path / "sa.kubeconfig"
        kubeconfig.write_text(json.dumps(config))

        # Volume files on: the kube-api-access volume needs a TokenRequest, which RBAC must allow.
        agent = start_agent(
            provider_config={"volumes": True}, args=["--kubeconfig", str(kubeconfig)]
        )  # the last --kubeconfig wins
        assert f"via kubeconfig {kubeconfig}" in agent.log()
        manifest = pod_manifest("limited", agent.node_name)
        manifest["spec"]["containers"][0]["env"] = [
            {
                "name": "A",
                "valueFrom": {"configMapKeyRef": {"name": "kube-root-ca.crt", "key": "ca.crt"}},
            }
        ]
        create(devcluster, kube_namespace, manifest)
        wait_until(
            lambda: (
                (pod(devcluster, kube_namespace, "limited") or {}).get("status", {}).get("phase")
                == "Running"
            ),
            60,
            "the pod to run under the limited identity",
        )
        devcluster.kubectl("delete", "pod", "limited", "-n", kube_namespace, "--wait=false")
        wait_until(lambda: pod(devcluster, kube_namespace, "limited") is None, 60, "deleted")
        forbidden = [
            line for line in agent.log().splitlines() if " 403 " in line or "forbidden" in line
        ]
        assert not forbidden, forbidden
    finally:
        devcluster.kubectl("delete", "clusterrolebinding", binding, check=False)
