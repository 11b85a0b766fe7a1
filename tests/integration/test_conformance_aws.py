"""The aws provider passes the provider conformance suite (virtual_kubelet.testing) against moto
on loopback, with the test-side Fargate stand-in playing the containers (aws_backend.py): shell
scripts of echo / exit / sleep, exactly what the suite's workloads are."""

from __future__ import annotations

import pytest

from virtual_kubelet.testing import ConformanceProfile, ProviderConformance, Workload, Workloads

from .aws_backend import AwsStandIn, aws

__all__ = ["aws"]  # the fixture, imported for pytest

_NO_CONFIG_MAP_VOLUMES = (
    "the aws provider refuses configMap volumes (Fargate has no way to receive the agent's files; "
    "see docs/providers/aws.md), and the suite's configured pod mounts one"
)


class FargateWorkloads(Workloads):
    """Shell scripts the stand-in plays; nothing reads stdin, serves a port or sees volume
    files, and a pod asking for more than Fargate's largest task is refused."""

    image = "public.ecr.aws/docker/library/busybox:1.36"

    def reports(self, mount_path: str, file_name: str) -> Workload | None:
        return None

    def echoes_stdin(self) -> Workload | None:
        return None

    def serves(self, port: int) -> Workload | None:
        return None

    def read_command(self, mount_path: str, file_name: str) -> list[str] | None:
        return None

    def rejected(self) -> Workload | None:
        return Workload(
            container={"command": ["sleep", "3600"], "resources": {"requests": {"cpu": "64"}}},
            message="the largest Fargate task has 16 vCPU",
        )


class TestAwsConformance(ProviderConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def conformance_profile(cls, aws: AwsStandIn) -> ConformanceProfile:
        return ConformanceProfile(
            provider="aws",
            config=aws.config(),
            env=AwsStandIn.env(),
            workloads=FargateWorkloads(),
        )

    def test_env_reaches_the_workload(self) -> None:  # type: ignore[override]
        pytest.skip(_NO_CONFIG_MAP_VOLUMES)

    def test_config_map_volume_file_reaches_the_workload(self) -> None:  # type: ignore[override]
        pytest.skip(_NO_CONFIG_MAP_VOLUMES)
