"""metrics-server in the dev cluster: the API objects that make `kubectl top` reach it.

metrics-server runs as a host process beside the control plane (`startup.py` starts it), so what
upstream's manifest does with a Deployment and a ServiceAccount is done here with a client
certificate (user `metrics-server`) and these objects: upstream's RBAC, bound to that user; a
Service; and the APIService `v1beta1.metrics.k8s.io` that the API server's aggregation layer
proxies to it.

The dev cluster has no kube-proxy and listens on loopback only, and EndpointSlices may not name a
loopback address, so the Service is of type ExternalName (`127.0.0.1`): the aggregator resolves
such a Service to its external name and the APIService's port, with no endpoints involved. It
still verifies metrics-server's certificate against the APIService's caBundle (the cluster CA) for
the name `metrics-server.kube-system.svc`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Protocol

#: The user metrics-server authenticates as, to the API server and to kubelets.
USER = "metrics-server"
NAMESPACE = "kube-system"
SERVICE = "metrics-server"
APISERVICE = "v1beta1.metrics.k8s.io"
#: The names its serving certificate is valid for (the aggregator checks the service DNS name).
SERVING_NAMES = (
    f"{SERVICE}.{NAMESPACE}.svc",
    f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
    "localhost",
    "127.0.0.1",
)
_LABELS = {
    "k8s-app": "metrics-server",
    "app.kubernetes.io/managed-by": "virtual-kubelet-devcluster",
}


class _Kubectl(Protocol):
    def kubectl(self, *args: str, input: str | bytes | None = None) -> Any: ...


def _meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(_LABELS), **extra}
    if namespace:
        meta["namespace"] = namespace
    return meta


def manifests(ca_cert: Path, port: int) -> list[dict[str, Any]]:
    """The objects to apply (upstream's components.yaml, less the Deployment and ServiceAccount)."""
    user = [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": USER}]
    return [
        # Lets `view`/`edit`/`admin` holders run `kubectl top`, as upstream does.
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(
                "system:aggregated-metrics-reader",
                labels={
                    **_LABELS,
                    "rbac.authorization.k8s.io/aggregate-to-view": "true",
                    "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                    "rbac.authorization.k8s.io/aggregate-to-admin": "true",
                },
            ),
            "rules": [
                {
                    "apiGroups": ["metrics.k8s.io"],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        # What metrics-server itself reads: nodes and pods, and each kubelet's /metrics/resource
        # (our kubelet port authorises that as `get nodes/metrics` with a SubjectAccessReview).
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta("system:metrics-server"),
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {
                    "apiGroups": [""],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta("system:metrics-server"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:metrics-server",
            },
            "subjects": user,
        },
        # Delegated authentication and authorisation of the requests the aggregator forwards.
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta("metrics-server:system:auth-delegator"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": user,
        },
        # Reads the front-proxy CA and allowed names from kube-system/extension-apiserver-authentication.
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta("metrics-server-auth-reader", NAMESPACE),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "extension-apiserver-authentication-reader",
            },
            "subjects": user,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(SERVICE, NAMESPACE),
            "spec": {
                "type": "ExternalName",
                "externalName": "127.0.0.1",
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": _meta(APISERVICE),
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "service": {"name": SERVICE, "namespace": NAMESPACE, "port": port},
                "caBundle": base64.b64encode(ca_cert.read_bytes()).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def register(cluster: _Kubectl, ca_cert: Path, port: int) -> None:
    """Apply the objects (server-side, so a restarted cluster with a new port updates them)."""
    doc = {"apiVersion": "v1", "kind": "List", "items": manifests(ca_cert, port)}
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=virtual-kubelet-devcluster",
        "-f",
        "-",
        input=json.dumps(doc),
    )


def available(apiservice: dict[str, Any]) -> bool:
    """Whether the aggregator reports the APIService Available (it reached metrics-server)."""
    for condition in apiservice.get("status", {}).get("conditions", []):
        if condition.get("type") == "Available":
            return bool(condition.get("status") == "True")
    return False
