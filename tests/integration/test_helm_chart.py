"""The Helm chart: `helm lint` and `helm template` pass for each provider's example values
(charts/virtual-kubelet/ci/), bad values fail with the schema's message, and what it renders is
accepted by the real API server (`kubectl apply --dry-run=server`).

helm comes from the `helm` fixture (conftest.py): built from its Go module and cached; where it
cannot be built the tests are skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtual_kubelet.devcluster import DevCluster, wait_until

CHART = Path(__file__).resolve().parents[2] / "charts" / "virtual-kubelet"
EXAMPLES = sorted((CHART / "ci").glob("*-values.yaml"))


def _stand_in_crd(plural: str, kind: str) -> dict[str, Any]:
    """A Prometheus operator CRD (ServiceMonitor, PrometheusRule) reduced to what server-side
    validation needs: the operator is not part of the dev cluster."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


OPERATOR_CRDS = [
    _stand_in_crd("servicemonitors", "ServiceMonitor"),
    _stand_in_crd("prometheusrules", "PrometheusRule"),
]


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


def render(helm: Path, namespace: str, *args: str) -> str:
    result = run_helm(helm, "template", "vk", str(CHART), "--namespace", namespace, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def operator_crds(devcluster: DevCluster) -> Iterator[None]:
    for crd in OPERATOR_CRDS:
        devcluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    wait_until(
        lambda: (
            {"servicemonitors", "prometheusrules"}
            <= set(
                devcluster.kubectl(
                    "api-resources", "--api-group=monitoring.coreos.com", "-o", "name"
                )
                .stdout.replace(".monitoring.coreos.com", "")
                .split()
            )
        ),
        30,
        "the Prometheus operator's CRDs to be served",
    )
    yield
    for crd in OPERATOR_CRDS:
        devcluster.kubectl("delete", "crd", crd["metadata"]["name"], "--wait=false", check=False)


def test_every_provider_we_ship_has_example_values() -> None:
    shipped = {"mock", "process", "web", "cri", "kubernetes", "slurm"}
    examples = {yaml.safe_load(f.read_text())["provider"] for f in EXAMPLES}
    assert shipped <= examples
    assert shipped <= set(yaml.safe_load((CHART / "values.yaml").read_text())["providers"])


@pytest.mark.parametrize("values", EXAMPLES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_example_values_lint_render_and_pass_server_side_validation(
    helm: Path,
    devcluster: DevCluster,
    kube_namespace: str,
    operator_crds: None,
    values: Path,
) -> None:
    lint = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    manifests = render(helm, kube_namespace, "-f", str(values))
    docs = [d for d in yaml.safe_load_all(manifests) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ClusterRoleBinding", "ServiceAccount"} <= kinds
    applied = devcluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=manifests, check=False
    )
    assert applied.returncode == 0, applied.stderr


def test_install_time_errors_name_the_value(helm: Path) -> None:
    cases = {
        ("--set", "provider="): "at '/provider': minLength",
        ("--set", "provider=mock", "--set", "taint.effect=Sometimes"): (
            "at '/taint/effect': value must be one of 'NoSchedule', 'PreferNoSchedule', 'NoExecute'"
        ),
        ("--set", "provider=mock", "--set", "nodeName=Not_A_Name"): "at '/nodeName'",
        ("--set", "provider=mock", "--set", "replicaCount=0"): "at '/replicaCount': minimum",
        ("--set", "provider=mock", "--set", "logLevel=loud"): "at '/logLevel'",
        ("--set", "provider=mock", "--set", "replicas=2"): "additional properties 'replicas'",
        ("--set", "provider=mock", "--set", "apiserverCert=QUJD"): (
            "apiserverCert and apiserverKey go together"
        ),
    }
    for args, message in cases.items():
        result = run_helm(helm, "template", "vk", str(CHART), *args)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)


def _deployment(manifests: str) -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all(manifests) if d and d["kind"] == "Deployment")


def test_what_the_values_turn_into(helm: Path) -> None:
    """The agent's flags and environment follow the values (what an operator relies on)."""
    single = _deployment(render(helm, "vk", "--set", "provider=mock"))
    container = single["spec"]["template"]["spec"]["containers"][0]
    assert "--leader-elect" not in container["args"]
    assert single["spec"]["strategy"]["type"] == "Recreate"
    env = {e["name"]: e for e in container["env"]}
    assert env["VKUBELET_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["VKUBELET_TAINT_VALUE"]["value"] == "mock"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    pod_security = single["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True

    ha = _deployment(
        render(
            helm,
            "vk",
            "--set",
            "provider=mock",
            "--set",
            "replicaCount=2",
            "--set",
            "extraArgs={--kube-api-qps=50}",
        )
    )
    args = ha["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect" in args
    assert "--leader-elect-namespace=vk" in args
    assert "--kube-api-qps=50" in args
    assert ha["spec"]["strategy"]["type"] == "RollingUpdate"

    legacy = render(helm, "vk", "-f", str(CHART / "ci" / "original-chart-values.yaml"))
    binding = next(d for d in yaml.safe_load_all(legacy) if d and d["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "cluster-admin"  # rbac.clusterAdmin=true, as it was

    least = render(helm, "vk", "--set", "provider=mock")
    role = next(d for d in yaml.safe_load_all(least) if d and d["kind"] == "ClusterRole")
    deploy = yaml.safe_load((CHART.parents[1] / "deploy" / "rbac.yaml").read_text())
    assert role["rules"] == deploy["rules"]
