"""The kubernetes provider's copy of a source EndpointSlice for the target: only the endpoints of
pods that stayed home, no references to source objects, labels that keep the target's endpoint
controller away and tie it to the reflected Service."""

from __future__ import annotations

from virtual_kubelet.providers.kubernetes.endpoint_slices import MANAGED_BY, slice_copy


def test_a_slice_copy_keeps_the_home_endpoints_only() -> None:
    source = {
        "metadata": {
            "name": "web-x1",
            "namespace": "team",
            "labels": {
                "kubernetes.io/service-name": "web",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": ["10.0.0.5"],
                "conditions": {"ready": True},
                "nodeName": "home-node",
                "targetRef": {"kind": "Pod", "name": "web-a", "uid": "u1"},
            },
            {"addresses": ["10.9.0.7"], "conditions": {"ready": True}, "nodeName": "vnode"},
        ],
    }
    copy = slice_copy(source, "team-home", owner="home.vnode", cluster_id="home", node="vnode")
    assert copy is not None
    assert copy["metadata"]["namespace"] == "team-home"
    labels = copy["metadata"]["labels"]
    assert labels["kubernetes.io/service-name"] == "web"
    assert labels["endpointslice.kubernetes.io/managed-by"] == MANAGED_BY
    assert copy["endpoints"] == [{"addresses": ["10.0.0.5"], "conditions": {"ready": True}}]
    assert copy["ports"] == source["ports"]
    del source["metadata"]["labels"]["kubernetes.io/service-name"]
    assert slice_copy(source, "team-home", owner="o", cluster_id="c", node="vnode") is None
