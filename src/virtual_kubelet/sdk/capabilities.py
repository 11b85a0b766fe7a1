"""Which optional hooks a provider implements: one table, built once per provider.

The core never probes a provider (calling a hook to see whether it raises NotImplementedError) nor
compares methods itself: it reads `Capabilities.of(provider)`. The default answer is "every hook
the provider's class overrides"; a provider switches one off at run time by overriding
`Provider.capabilities()` (the mock does so for `notify_pods` when its config turns push off).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .provider import Provider

__all__ = ["Capabilities"]

# One table per live provider object, so every consumer sees the same answer.
_built: weakref.WeakKeyDictionary[Provider, Capabilities] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Capabilities:
    """One flag per optional hook of `Provider`, named after the hook."""

    #: Pushes pod status (otherwise the core polls `get_pod_status`).
    notify_pods: bool = False
    #: Pushes node status changes.
    notify_node_status: bool = False
    #: Decides pod IPs before `create_pod` (so `status.podIP` env resolves).
    assign_pod_ips: bool = False
    #: `kubectl logs` (otherwise `/containerLogs` answers 501).
    get_container_logs: bool = False
    #: `kubectl exec` (otherwise `/exec` answers 501).
    run_in_container: bool = False
    #: `kubectl attach` (otherwise `/attach` answers 501).
    attach_to_container: bool = False
    #: `kubectl port-forward` (otherwise `/portForward` answers 501).
    port_forward: bool = False
    #: `/stats/summary`, `/metrics/resource`, `kubectl top` (otherwise 501).
    get_stats_summary: bool = False

    @classmethod
    def of(cls, provider: Provider) -> Capabilities:
        """What `provider` implements, as its `capabilities()` said the first time it was asked."""
        try:
            return _built[provider]
        except KeyError:
            pass
        except TypeError:  # an unhashable provider (it defines __eq__ only): ask it each time
            return provider.capabilities()
        capabilities = _built[provider] = provider.capabilities()
        return capabilities

    @classmethod
    def hooks(cls) -> tuple[str, ...]:
        """The names of every optional hook, in declaration order."""
        return tuple(hook.name for hook in fields(cls))

    def __contains__(self, hook: object) -> bool:
        """`"port_forward" in capabilities`: whether that hook is implemented."""
        return isinstance(hook, str) and hook in self.hooks() and bool(getattr(self, hook))

    @property
    def implemented(self) -> tuple[str, ...]:
        """The hooks that are implemented, in declaration order (for logs)."""
        return tuple(hook for hook in self.hooks() if getattr(self, hook))
