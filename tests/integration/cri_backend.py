"""The `containerd` fixture: a private containerd (installed from Debian when missing) with the
locally built busybox and pause images, shared by the cri provider's tests. Under CI=true a
backend that cannot be had is a failure; elsewhere the tests are skipped with the reason."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc as cri_grpc

from virtual_kubelet.devcluster.containerd import BackendUnavailable, Containerd


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    backend = Containerd.named("tests")
    started_here = backend.pid() is None
    try:
        backend.up()
    except BackendUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"containerd is required under CI=true: {exc}")
        pytest.skip(f"no containerd here: {exc}")
    yield backend
    if started_here:
        backend.down()


def sandboxes(backend: Containerd, uid: str) -> list[object]:
    """The runtime's pod sandboxes of pod `uid` (what the runtime itself says)."""
    with grpc.insecure_channel(backend.endpoint) as channel:
        runtime = cri_grpc.RuntimeServiceStub(channel)
        listed = runtime.ListPodSandbox(
            cri.ListPodSandboxRequest(
                filter=cri.PodSandboxFilter(label_selector={"io.kubernetes.pod.uid": uid})
            ),
            timeout=10,
        )
        return list(listed.items)


def containers(backend: Containerd, uid: str) -> list[object]:
    with grpc.insecure_channel(backend.endpoint) as channel:
        runtime = cri_grpc.RuntimeServiceStub(channel)
        listed = runtime.ListContainers(
            cri.ListContainersRequest(
                filter=cri.ContainerFilter(label_selector={"io.kubernetes.pod.uid": uid})
            ),
            timeout=10,
        )
        return list(listed.containers)
