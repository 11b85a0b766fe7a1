"""Pure translations between the source pod and its copy in the target cluster (no I/O).

`target_pod` rewrites a source pod for the target: our node's scheduling constraints removed and
the target's added, the source's service-account volume dropped, downward-API values that would
read differently in the target resolved here, tracing labels and annotations added.
`references` lists the ConfigMaps and Secrets a pod needs reflected; `source_view` turns the remote
pod back into what the agent expects (source namespace, name, UID, and the remote status).
"""

from __future__ import annotations

from typing import Any

from ...sdk import SPEC_HASH_ANNOTATION, Pod, deep_copy
from .config import PodRewriteConfig
from .naming import (
    OWNER_LABEL,
    SOURCE_CLUSTER,
    SOURCE_NAME,
    SOURCE_NAMESPACE,
    SOURCE_SERVICE_ACCOUNT,
    SOURCE_UID,
)
from .service_account import token_secret_name

__all__ = ["references", "source_view", "target_pod"]

#: Our node's taint; its toleration means nothing in the target.
_OUR_TOLERATIONS = {"virtual-kubelet.io/provider"}
#: nodeSelector keys that pick our virtual node.
_OUR_SELECTOR_KEYS = {"kubernetes.io/hostname", "type", "kubernetes.io/role"}
#: Downward-API fields whose value in the target would differ from the source's.
_SOURCE_FIELDS = {
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
}
_SPEC_DROPPED = ("nodeName", "priority", "priorityClassName", "preemptionPolicy", "overhead")
_STATUS_KEPT = (
    "phase",
    "conditions",
    "message",
    "reason",
    "podIP",
    "podIPs",
    "startTime",
    "containerStatuses",
    "initContainerStatuses",
    "qosClass",
)


def _is_token_volume(volume: dict[str, Any]) -> bool:
    sources = (volume.get("projected") or {}).get("sources") or []
    return any("serviceAccountToken" in s for s in sources)


def _resolved_env(pod: Pod) -> dict[tuple[str, str], str]:
    """(container, variable) -> value, as the agent resolved them."""
    values: dict[tuple[str, str], str] = {}
    for key in ("initContainers", "containers"):
        for container in pod["spec"].get(key) or []:
            for var in container.get("env") or []:
                if "value" in var:
                    values[(container["name"], var["name"])] = str(var["value"])
    return values


def target_pod(
    original: Pod,
    resolved: Pod,
    *,
    namespace: str,
    owner: str,
    cluster_id: str,
    rewrite: PodRewriteConfig,
    home_api: tuple[str, int] | None = None,
) -> Pod:
    """The pod to create in the target namespace `namespace`. `original` is the source API's
    pod (env references intact), `resolved` the agent's copy (env values resolved); `home_api`
    is the (host, port) of the source API server for `service_account: source`."""
    meta = original["metadata"]
    spec = deep_copy(original["spec"])
    for key in _SPEC_DROPPED:
        spec.pop(key, None)
    spec.pop("ephemeralContainers", None)
    # Scheduling: nothing that names our node travels; the target's own constraints are added.
    removed_tolerations = _OUR_TOLERATIONS | set(rewrite.remove_toleration_keys)
    tolerations = [
        t for t in spec.get("tolerations") or [] if t.get("key") not in removed_tolerations
    ]
    tolerations += [dict(t) for t in rewrite.tolerations]
    spec["tolerations"] = tolerations
    removed_keys = _OUR_SELECTOR_KEYS | set(rewrite.remove_node_selector_keys)
    selector = {k: v for k, v in (spec.get("nodeSelector") or {}).items() if k not in removed_keys}
    selector.update(rewrite.node_selector)
    spec["nodeSelector"] = selector
    if isinstance(spec.get("affinity"), dict):
        spec["affinity"].pop("nodeAffinity", None)
    # The source's projected token does not travel: the target's own, a Secret holding a token
    # minted in the source (home_api set: service_account "source"), or none.
    token_volumes = {v["name"] for v in spec.get("volumes") or [] if _is_token_volume(v)}
    spec["volumes"] = [v for v in spec.get("volumes") or [] if v["name"] not in token_volumes]
    spec.pop("serviceAccountName", None)
    spec.pop("serviceAccount", None)
    home_env: list[dict[str, str]] = []
    if rewrite.service_account == "source" and home_api is not None:
        spec["automountServiceAccountToken"] = False
        spec["volumes"] += [
            {"name": name, "secret": {"secretName": token_secret_name(meta["name"])}}
            for name in sorted(token_volumes)
        ]
        token_volumes = set()  # their mounts stay, now served by the Secret
        host, port = home_api
        home_env = [
            {"name": "KUBERNETES_SERVICE_HOST", "value": host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(port)},
        ]
    elif rewrite.service_account == "target":
        spec.pop("automountServiceAccountToken", None)
    else:
        spec["automountServiceAccountToken"] = False
    values = _resolved_env(resolved)
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            container["volumeMounts"] = [
                m for m in container.get("volumeMounts") or [] if m["name"] not in token_volumes
            ]
            if home_env:
                names = {e["name"] for e in home_env}
                others = [e for e in container.get("env") or [] if e["name"] not in names]
                container["env"] = [dict(e) for e in home_env] + others
            for var in container.get("env") or []:
                field = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                if field in _SOURCE_FIELDS and (container["name"], var["name"]) in values:
                    var.pop("valueFrom")
                    var["value"] = values[(container["name"], var["name"])]
    annotations = dict(meta.get("annotations") or {})
    annotations.update(
        {
            SOURCE_CLUSTER: cluster_id,
            SOURCE_NAMESPACE: meta["namespace"],
            SOURCE_NAME: meta["name"],
        }
    )
    if home_env:
        annotations[SOURCE_SERVICE_ACCOUNT] = (
            original["spec"].get("serviceAccountName") or "default"
        )
    spec_hash = (resolved["metadata"].get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    if spec_hash:
        annotations[SPEC_HASH_ANNOTATION] = spec_hash
    labels = dict(meta.get("labels") or {})
    labels.update({OWNER_LABEL: owner, SOURCE_UID: meta["uid"]})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": meta["name"],
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def references(pod: Pod) -> set[tuple[str, str]]:
    """The (kind, name) of every ConfigMap ("configmaps") and Secret ("secrets") `pod` uses in
    env, envFrom, volumes and projected volumes, imagePullSecrets included."""
    found: set[tuple[str, str]] = set()
    spec = pod["spec"]
    for ref in spec.get("imagePullSecrets") or []:
        if ref.get("name"):
            found.add(("secrets", ref["name"]))
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            for var in container.get("env") or []:
                source = var.get("valueFrom") or {}
                if "configMapKeyRef" in source:
                    found.add(("configmaps", source["configMapKeyRef"]["name"]))
                if "secretKeyRef" in source:
                    found.add(("secrets", source["secretKeyRef"]["name"]))
            for env_from in container.get("envFrom") or []:
                if "configMapRef" in env_from:
                    found.add(("configmaps", env_from["configMapRef"]["name"]))
                if "secretRef" in env_from:
                    found.add(("secrets", env_from["secretRef"]["name"]))
    for volume in spec.get("volumes") or []:
        if "configMap" in volume:
            found.add(("configmaps", volume["configMap"]["name"]))
        if "secret" in volume:
            found.add(("secrets", volume["secret"]["secretName"]))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in source:
                found.add(("configmaps", source["configMap"]["name"]))
            if "secret" in source:
                found.add(("secrets", source["secret"]["name"]))
    return found


def source_view(remote: Pod, host_ip: str) -> Pod:
    """The remote pod as the agent knows it: its source namespace, name and UID, the agent's spec
    hash, and the remote status (hostIP: our node's, where the source cluster sees it run)."""
    meta = remote["metadata"]
    annotations = meta.get("annotations") or {}
    status = {k: deep_copy(v) for k, v in (remote.get("status") or {}).items() if k in _STATUS_KEPT}
    status.setdefault("phase", "Pending")
    status["hostIP"] = host_ip
    status["hostIPs"] = [{"ip": host_ip}]
    view_annotations = {}
    if SPEC_HASH_ANNOTATION in annotations:
        view_annotations[SPEC_HASH_ANNOTATION] = annotations[SPEC_HASH_ANNOTATION]
    return {
        "metadata": {
            "namespace": annotations.get(SOURCE_NAMESPACE, meta["namespace"]),
            "name": annotations.get(SOURCE_NAME, meta["name"]),
            "uid": (meta.get("labels") or {}).get(SOURCE_UID, ""),
            "annotations": view_annotations,
        },
        "spec": remote.get("spec") or {},
        "status": status,
    }
