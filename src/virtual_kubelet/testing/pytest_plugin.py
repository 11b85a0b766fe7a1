"""pytest fixtures of the provider conformance kit: the profile under test, the node running it,
and a namespace for the suite's pods (all class-scoped: one agent serves every check of a class).

Registered through the `pytest11` entry point, next to the `devcluster` fixtures. Importing it
loads no agent code: the agent is started only by a class that asks for `conformance_node`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..devcluster import DevCluster
    from .node import ConformanceNode
    from .profile import ConformanceProfile


@pytest.fixture(scope="class")
def conformance_profile(request: pytest.FixtureRequest) -> ConformanceProfile:
    """The `profile` of the test class. Override this fixture (class scope) to build the profile
    at run time, e.g. with paths from `tmp_path_factory`."""
    from .profile import ConformanceProfile

    profile = getattr(request.cls, "profile", None)
    if not isinstance(profile, ConformanceProfile):
        raise pytest.UsageError(
            f"{request.node.nodeid}: set `profile = ConformanceProfile(...)` on the class, or "
            "define a class-scoped `conformance_profile` fixture"
        )
    return profile


@pytest.fixture(scope="class")
def conformance_node(
    devcluster: DevCluster,
    conformance_profile: ConformanceProfile,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ConformanceNode]:
    """An agent running the profile's provider on a node of its own; stopped (its pods' leftovers
    removed, its node deleted) after the class."""
    from .node import ConformanceNode

    name = f"conformance-{conformance_profile.provider}-{secrets.token_hex(3)}"
    node = ConformanceNode(devcluster, conformance_profile, name, tmp_path_factory.mktemp(name))
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture(scope="class")
def conformance_namespace(conformance_node: ConformanceNode) -> Iterator[str]:
    """A namespace for the pods of one class; deleted (without waiting) afterwards."""
    name = f"conformance-{secrets.token_hex(4)}"
    conformance_node.cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        conformance_node.cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
