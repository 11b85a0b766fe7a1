"""virtual-kubelet: a Kubernetes kubelet that runs pods through pluggable Python providers.

The public SDK (provider base class, errors) is re-exported here as it lands; internals live in
sub-packages (`kube`, `node`, `pods`, `kubelet_api`, `providers`, `devcluster`).
"""

__version__ = "0.1.0.dev0"
