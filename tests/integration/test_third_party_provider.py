"""A provider from another package is found through its entry point, runs pods (the tutorial),
and passes the conformance suite with the few lines its package adds."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.testing import ConformanceProfile

from .conftest import AgentFactory, create, pod, pod_manifest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-provider"


def _installed_example(site: Path) -> Path:
    """The tutorial provider as pip would install it: the module plus a dist-info declaring the
    `virtual_kubelet.providers` entry point, on a directory put on PYTHONPATH."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "hello_provider.py", site)
    info = site / "hello_provider-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-provider\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[virtual_kubelet.providers]\nhello = hello_provider:HelloProvider\n"
    )
    return site


def _example_module(name: str) -> ModuleType:
    """A module of the example package, loaded from its file (the package is not installed)."""
    spec = importlib.util.spec_from_file_location(f"hello_example_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Bound as a module, not as a class: pytest would collect the example's class a second time.
_example_conformance = _example_module("test_conformance")


class TestHelloProviderConformance(_example_conformance.TestHelloProvider):
    """The example's own conformance class, run with the example installed as pip would."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_profile(cls, tmp_path_factory: pytest.TempPathFactory) -> ConformanceProfile:
        site = _installed_example(tmp_path_factory.mktemp("hello-site"))
        path = f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        return dataclasses.replace(cls.profile, env={"PYTHONPATH": path})


def test_entry_point_provider_is_listed_and_runs_a_pod(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    site = _installed_example(tmp_path / "site")
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    listing = subprocess.run(
        [sys.executable, "-m", "virtual_kubelet", "providers"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    ).stdout
    assert "hello" in listing
    assert "Tutorial provider" in listing

    agent = start_agent(provider="hello", env=env)
    node = devcluster.get_json("node", agent.node_name)
    assert node["status"]["capacity"]["pods"] == "50"
    create(devcluster, kube_namespace, pod_manifest("greeter", agent.node_name))
    wait_until(
        lambda: (
            (pod(devcluster, kube_namespace, "greeter") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        60,
        "the tutorial provider to run the pod",
    )
    # The tutorial provider has no kubelet API hooks: those routes answer 501, naming the method.
    agent.approve_serving_certificate()
    logs = devcluster.kubectl("logs", "greeter", "-n", kube_namespace, check=False)
    assert logs.returncode != 0
    assert "get_container_logs is not implemented by the HelloProvider provider" in logs.stderr
    summary = devcluster.kubectl(
        "get", "--raw", f"/api/v1/nodes/{agent.node_name}/proxy/stats/summary", check=False
    )
    assert "get_stats_summary is not implemented" in summary.stderr
    devcluster.kubectl("delete", "pod", "greeter", "-n", kube_namespace, "--wait=false")
    wait_until(lambda: pod(devcluster, kube_namespace, "greeter") is None, 60, "greeter deleted")
