"""The azurebatch provider passes the provider conformance suite (virtual_kubelet.testing) against
the loopback Batch server (tests/integration/batch_server.py), whose tasks run as local processes.

Batch has no exec, attach, port-forward or stats, and a task cannot see the agent's volume files:
those checks are skipped with that reason. Env is checked by test_azurebatch_provider.py instead
(the kit would read it from a volume-mounting pod's log)."""

from __future__ import annotations

import pytest

from virtual_kubelet.testing import ConformanceProfile, ProviderConformance, Workload, Workloads

from .batch_server import BatchServer, batch_server

__all__ = ["batch_server"]  # the fixture, imported for pytest


class BatchWorkloads(Workloads):
    """Shell command lines run by Batch on a pool without containers."""

    def reports(self, mount_path: str, file_name: str) -> Workload | None:
        return None  # a task cannot see the volume file the report would include

    def read_command(self, mount_path: str, file_name: str) -> list[str] | None:
        return None

    def echoes_stdin(self) -> Workload | None:
        return None  # Batch tasks have no stdin

    def serves(self, port: int) -> Workload | None:
        return None  # no port-forward into a Batch node

    def rejected(self) -> Workload | None:
        # Without containers Batch runs the command line itself: there must be one.
        return Workload(container={"command": [], "args": []}, message="needs a command")


class TestAzureBatchConformance(ProviderConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def conformance_profile(cls, batch_server: BatchServer) -> ConformanceProfile:
        return ConformanceProfile(
            provider="azurebatch",
            config={
                "account_url": batch_server.url,
                "account_name": batch_server.account,
                "pool_id": "plain",
                "poll_seconds": 1,
            },
            env={"AZURE_BATCH_ACCOUNT_KEY": batch_server.key},
            workloads=BatchWorkloads(),
            reports_pod_ip=False,
        )
