"""Container probes and lifecycle handlers with the kubelet's semantics (now in the SDK, shared
with the cri provider: `virtual_kubelet.sdk.probes`)."""

from __future__ import annotations

from ...sdk.probes import Handlers, go_quote, pod_desc, probe_loop, resolve_port, settings

__all__ = ["Handlers", "go_quote", "pod_desc", "probe_loop", "resolve_port", "settings"]
