"""The provider contract's old home, kept so existing providers keep working.

The contract now lives in `virtual_kubelet.sdk`; import from there. Every name this module
exported before is still exported, with the same meaning.
"""

from __future__ import annotations

from ..sdk import (
    Capabilities,
    ContainerIO,
    DuplexStream,
    InvalidInput,
    LogOptions,
    Node,
    NodeCallback,
    NotFound,
    Pod,
    PodCallback,
    PodStatus,
    Provider,
    ProviderContext,
    TermSize,
    implements,
)

__all__ = [
    "Capabilities",
    "ContainerIO",
    "DuplexStream",
    "InvalidInput",
    "LogOptions",
    "Node",
    "NodeCallback",
    "NotFound",
    "Pod",
    "PodCallback",
    "PodStatus",
    "Provider",
    "ProviderContext",
    "TermSize",
    "implements",
]
