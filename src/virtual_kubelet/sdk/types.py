"""The shapes that cross the provider boundary: pods, statuses and nodes as plain JSON dicts.

They are the API server's own JSON (what `kubectl get -o json` prints), parsed with orjson and
never wrapped in model classes: the agent moves thousands of pods a second through these dicts, and
a typed wrapper or validation pass on that path would cost more than it catches. The aliases name
what a dict holds, for readers and signatures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["SPEC_HASH_ANNOTATION", "Node", "NodeCallback", "Pod", "PodCallback", "PodStatus"]

#: A v1 Pod (`metadata`, `spec`, `status`).
Pod = dict[str, Any]
#: A v1 PodStatus (`phase`, `conditions`, `containerStatuses`, ...).
PodStatus = dict[str, Any]
#: A v1 Node (`metadata`, `spec`, `status`).
Node = dict[str, Any]
#: What `Provider.notify_pods` is given: call it with the whole pod whenever its status changes.
PodCallback = Callable[[Pod], None]
#: What `Provider.notify_node_status` is given: call it with the node when it changes.
NodeCallback = Callable[[Node], None]

#: The annotation holding a hash of the pod spec the agent gave the provider. A provider returns the
#: pods it was given (annotations included), so after a restart the agent knows whether a pod it
#: adopts is current; a provider may overwrite it to force the agent to re-apply the pod.
SPEC_HASH_ANNOTATION = "virtual-kubelet.io/spec-hash"
