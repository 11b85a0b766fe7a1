"""pytest fixtures for a real local control plane: `devcluster` (per session), `kube_namespace`.

Registered through the `pytest11` entry point, so provider authors who install virtual-kubelet can
test against the same real API server. The cluster is started lazily, only by tests that ask for it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator

import pytest

from .cluster import DevCluster
from .config import DevClusterConfig
from .errors import DevClusterError

#: Test clusters notice a silent node within seconds, so node-lifecycle tests stay short.
TEST_NODE_MONITOR_GRACE_PERIOD = "20s"
TEST_NODE_STARTUP_GRACE_PERIOD = "20s"


def config_for_tests(**overrides: object) -> DevClusterConfig:
    """The configuration the `devcluster` fixture uses; tests starting their own cluster reuse it."""
    settings: dict[str, object] = {
        "node_monitor_grace_period": TEST_NODE_MONITOR_GRACE_PERIOD,
        "node_startup_grace_period": TEST_NODE_STARTUP_GRACE_PERIOD,
        "node_address": os.geteuid() == 0,
    }
    settings.update(overrides)
    return DevClusterConfig(**settings)  # type: ignore[arg-type]


def _progress_printer(config: pytest.Config):  # type: ignore[no-untyped-def]
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def progress(message: str) -> None:
        if reporter is None:
            return
        ctx = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with ctx:
            reporter.write_line(f"devcluster: {message}")

    return progress


@pytest.fixture(scope="session")
def devcluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevCluster]:
    """A running control plane shared by the whole test session; stopped at the end."""
    cluster = DevCluster(
        tmp_path_factory.mktemp("devcluster"),
        config_for_tests(),
        progress=_progress_printer(request.config),
    )
    try:
        cluster.start()
    except DevClusterError as exc:
        pytest.fail(f"the dev cluster did not start:\n{exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def _label(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


@pytest.fixture
def kube_namespace(devcluster: DevCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, named after it; deleted (without waiting) afterwards."""
    name = f"t-{_label(request.node.name, 48)}-{secrets.token_hex(3)}"
    devcluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        devcluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
