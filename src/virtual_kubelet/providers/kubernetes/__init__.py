"""The `kubernetes` provider: a virtual node whose pods run in another Kubernetes cluster (the
offloading pattern of Liqo, Admiralty and tensile-kube). Docs: docs/providers/kubernetes.md.

One module per job: `config` (--provider-config), `naming` (owner label, tracing labels,
namespace mapping), `rewrite` (source pod <-> target pod, pure), `reflection` (ConfigMaps and
Secrets copied and kept in sync), `remote_pods` (the one shared watch of our pods in the target),
`capacity` (the target's free capacity), `streams` (logs proxied to the target) and `provider`
(the Provider tying them together).
"""

from __future__ import annotations

from .config import KubernetesConfig, load_config
from .provider import KubernetesProvider

__all__ = ["KubernetesConfig", "KubernetesProvider", "load_config"]
