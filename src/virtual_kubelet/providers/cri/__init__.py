"""The `cri` provider: pods as real containers through a container runtime's CRI v1 API
(containerd with its CRI plugin), reached over a unix socket or TCP, as a kubelet drives it.

Select it with `virtual-kubelet --provider cri --provider-config FILE` (examples/cri/). A private
containerd for trying it out: `python -m virtual_kubelet.devcluster.containerd up`. See
docs/providers/cri.md.

Modules: config.py (the config file), client.py (the grpc client), spec.py (pod -> CRI
messages), state.py (what the runtime does not remember), runner.py (one pod's lifecycle),
status.py (pod status), node.py (runtime health and node info), provider.py (the facade).
"""

from .provider import CriProvider

__all__ = ["CriProvider"]
