"""The provider contract: the base class a backend subclasses so virtual-kubelet can run pods on
it, and the context the agent gives it.

Pods, statuses and nodes cross this boundary as plain JSON dicts in the API server's own shape
(exactly what `kubectl get -o json` prints). Subclass `Provider`, implement the six abstract
methods, and optionally the push, node and kubelet API hooks; see docs/providers.md for a tutorial.
Which optional hooks a provider has is answered once, by `Capabilities.of(provider)`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..streams import ContainerIO, DuplexStream
from .capabilities import Capabilities
from .container_logs import LogOptions
from .types import Node, NodeCallback, Pod, PodCallback, PodStatus

__all__ = ["Provider", "ProviderContext", "implements"]


@dataclass(frozen=True)
class ProviderContext:
    """What the agent tells a provider about where it runs."""

    node_name: str
    #: "linux" or "windows" (from --os).
    operating_system: str
    #: The node's InternalIP: VKUBELET_POD_IP, else the address the agent detected.
    internal_ip: str
    #: The kubelet API port advertised in the node's daemonEndpoints (KUBELET_PORT).
    daemon_port: int
    #: --provider-config, if given. The provider reads and validates it.
    config_path: Path | None = None
    cluster_domain: str = "cluster.local"
    #: A directory the provider may keep state in across restarts.
    state_dir: Path = field(default_factory=lambda: Path("/var/lib/virtual-kubelet"))
    #: Where the core writes pod volumes (memory-backed by default, so secrets stay off disk);
    #: None means `state_dir / "pods"`.
    volumes_dir: Path | None = None

    @property
    def pods_dir(self) -> Path:
        """Where the core materialises pod volumes: `pods_dir/<pod uid>/volumes/<volume name>/`."""
        return self.volumes_dir if self.volumes_dir is not None else self.state_dir / "pods"

    def volume_path(self, pod: Pod, volume: str) -> Path:
        """The directory holding the files of `volume` of `pod` (configMap, secret, projected,
        downwardAPI and emptyDir volumes are filled in by the core before `create_pod`)."""
        return self.pods_dir / str(pod["metadata"]["uid"]) / "volumes" / volume


class Provider(abc.ABC):
    """Base class of every provider.

    All pod methods may be called concurrently for *different* pods, never for the same pod at the
    same time. Raise `NotFound` when a pod does not exist and `InvalidInput` when a request can never
    succeed; any other exception is retried with backoff and reported as an Event.
    """

    #: One line shown by `virtual-kubelet providers`.
    description: str = ""

    def __init__(self, context: ProviderContext) -> None:
        self.context = context

    # --- what the provider implements ----------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        """The optional hooks this provider implements: by default, every hook its class overrides.
        Override it only to switch a hook off at run time, for example from configuration:
        `return replace(super().capabilities(), notify_pods=False)`. The agent asks once, through
        `Capabilities.of(provider)`, after `start()`, and never probes a hook it was told is off."""
        cls = type(self)
        return Capabilities(
            **{
                hook.name: getattr(cls, hook.name) is not getattr(Provider, hook.name)
                for hook in fields(Capabilities)
            }
        )

    # --- lifecycle of the provider itself -------------------------------------------------------

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to the backend. Called once, before any other method."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release resources on shutdown. Pods keep running: a restarted agent adopts them."""

    # --- pods (required) ------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_pod(self, pod: Pod) -> None:
        """Start running `pod`. Its env is already resolved (names and values only) and its volumes
        materialised under `context.volume_path(pod, name)`. Return once the backend has accepted
        it; report progress through `notify_pods` (or `get_pod_status`)."""

    @abc.abstractmethod
    async def update_pod(self, pod: Pod) -> None:
        """Apply a changed spec (images, labels, annotations, activeDeadlineSeconds, ...)."""

    @abc.abstractmethod
    async def delete_pod(self, pod: Pod) -> None:
        """Stop `pod` gracefully (honour `metadata.deletionGracePeriodSeconds`). May be called more
        than once; raise `NotFound` if it is already gone. Once the pod has stopped, report a
        terminal status or stop returning it from `get_pod`."""

    @abc.abstractmethod
    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        """The pod as the provider knows it (with its status), or None."""

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        """The pod's current status; by default taken from `get_pod`."""
        pod = await self.get_pod(namespace, name)
        return None if pod is None else pod.get("status")

    @abc.abstractmethod
    async def list_pods(self) -> list[Pod]:
        """Every pod the provider runs for this node (used at start-up to adopt and clean up)."""

    # --- optional hooks ---------------------------------------------------------------------------

    def notify_pods(self, callback: PodCallback) -> None:
        """Push mode: store `callback` and call it with the whole pod (metadata + status) whenever
        a pod's status changes. It never blocks. A pod dict without `status` writes nothing and
        only asks the agent to look at the pod again (say, a pod being deleted is gone from the
        backend: the agent calls `get_pod`, gets None and removes the API object at once).
        Providers without it (see `capabilities()`) are polled through `get_pod_status`."""
        raise NotImplementedError

    def wants_volume_files(self) -> bool:
        """Whether the core should write pod volumes (configMap, secret, downwardAPI, projected
        with service-account tokens, emptyDir) under `context.volume_path` before `create_pod`.
        Providers that pass secrets to their backend another way, or run nothing (the mock by
        default), return False and save a TokenRequest and the file writes per pod."""
        return True

    async def assign_pod_ips(self, pod: Pod) -> list[str] | None:
        """The IPs `pod` will have, if the provider can decide them before `create_pod`; this is
        what lets env variables from `status.podIP` / `status.podIPs` resolve. Default: unknown."""
        return None

    # --- the node ---------------------------------------------------------------------------------

    async def configure_node(self, node: Node) -> None:  # noqa: B027 - optional hook
        """Fill in capacity, allocatable, conditions, addresses, nodeInfo, labels or providerID of
        the Node the agent registers. The agent has set defaults already."""

    async def ping(self) -> None:  # noqa: B027 - optional hook
        """Raise if the backend is unhealthy: the agent then stops renewing the node's Lease and
        the cluster marks the node NotReady."""

    def notify_node_status(self, callback: NodeCallback) -> None:
        """Push mode for node status: call `callback(node)` when capacity or conditions change."""
        raise NotImplementedError

    # --- the kubelet API (optional: a route whose hook is missing answers 501 Not Implemented) ----

    def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        """The container's log as chunks of bytes (an async generator), honouring `options`
        (follow, tail_lines, since, timestamps, previous; the core applies limit_bytes).
        `select_history` and `format_line` help providers that keep lines.
        Raise NotFound for an unknown pod or container."""
        raise NotImplementedError

    async def run_in_container(
        self, namespace: str, pod: str, container: str, command: list[str], io: ContainerIO
    ) -> int:
        """`kubectl exec`: run `command` in the container with `io`; return the exit code (0-255).
        Raise NotFound for an unknown pod or container, InvalidInput for a bad command."""
        raise NotImplementedError

    async def attach_to_container(
        self, namespace: str, pod: str, container: str, io: ContainerIO
    ) -> int | None:
        """`kubectl attach`: connect `io` to the container's main process until either side ends;
        return its exit code if it ended."""
        raise NotImplementedError

    async def port_forward(self, namespace: str, pod: str, port: int, stream: DuplexStream) -> None:
        """`kubectl port-forward`: carry bytes between `stream` and the pod's `port` until either
        side closes. Raise to refuse (the client sees the message)."""
        raise NotImplementedError

    async def get_stats_summary(self) -> dict[str, Any]:
        """Node and pod statistics in the kubelet's stats/v1alpha1 `Summary` shape (`/stats/summary`;
        `/metrics/resource` and `kubectl top` are derived from it)."""
        raise NotImplementedError


def implements(provider: Provider, method: str) -> bool:
    """Whether `provider` implements an optional method of `Provider` (e.g. "notify_pods").

    For the hooks in `Capabilities` this is what `Capabilities.of(provider)` says; for any other
    method, whether the provider's class overrides it. Kept for existing callers: new code reads
    `Capabilities.of(provider)` directly."""
    capabilities = Capabilities.of(provider)
    if method in capabilities.hooks():
        return method in capabilities
    return getattr(type(provider), method, None) is not getattr(Provider, method, None)
