"""A real local Kubernetes control plane built from upstream Go modules (for tests, bench, demo).

with DevCluster(tmpdir) as cluster:
    cluster.kubectl("get", "--raw", "/readyz")
"""

from .access import kubectl_path
from .build import Binaries, ensure_binaries
from .cluster import DevCluster
from .components import COMPONENTS
from .config import DevClusterConfig
from .errors import AlreadyRunningError, BuildError, DevClusterError, StartError
from .versions import VersionError, Versions
from .waiting import WaitTimeout, wait_until

__all__ = [
    "COMPONENTS",
    "AlreadyRunningError",
    "Binaries",
    "BuildError",
    "DevCluster",
    "DevClusterConfig",
    "DevClusterError",
    "StartError",
    "VersionError",
    "Versions",
    "WaitTimeout",
    "ensure_binaries",
    "kubectl_path",
    "wait_until",
]
