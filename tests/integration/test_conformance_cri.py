"""The cri provider passes the provider conformance suite (virtual_kubelet.testing) against a
private containerd and the locally built busybox image."""

from __future__ import annotations

import re

import pytest

from virtual_kubelet.devcluster.containerd import Containerd
from virtual_kubelet.devcluster.oci_images import BUSYBOX
from virtual_kubelet.testing import (
    ConformanceProfile,
    ProviderConformance,
    Workload,
    Workloads,
)

from .cri_backend import containerd

__all__ = ["containerd"]  # the fixture, imported for pytest


class CriWorkloads(Workloads):
    """Shell workloads in the busybox image (nc for the echo server), ended by SIGTERM at once."""

    image = BUSYBOX

    def _shell(self, script: str) -> Workload:
        # A container's first process is PID 1 of its PID namespace: SIGTERM has no default
        # action there, so `exec sleep` would wait out the grace period. A trap ends it at once.
        script = re.sub(r"exec sleep (\d+)$", r"sleep \1 & wait", script)
        if script.endswith("& wait"):
            script = f"trap 'exit 0' TERM; {script}"
        return super()._shell(script)

    def serves(self, port: int) -> Workload | None:
        return Workload(
            container={
                "command": ["nc", "-ll", "-p", str(port), "-e", "cat"],
                "ports": [{"containerPort": port, "protocol": "TCP"}],
                "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
            }
        )


class TestCriConformance(ProviderConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def conformance_profile(cls, containerd: Containerd) -> ConformanceProfile:
        return ConformanceProfile(
            provider="cri",
            config={"runtime_endpoint": containerd.endpoint, "restart_backoff_seconds": 1},
            workloads=CriWorkloads(),
        )
