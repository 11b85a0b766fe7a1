"""The mock provider: pods "run" in memory, for tests, benchmarks and trying the agent out.

Pods go Running at once (or after a delay) with every condition, container status and a pod IP.
Behaviour can be steered per pod with annotations (`mock.virtual-kubelet.io/...`) or for all pods in
the config file: start-up delays, exit codes, how long a pod takes to stop, and injected failures of
create/update/delete. With `persist: true` its pods survive an agent restart (a journal in the state
directory), which is how adoption after a crash is tested. It never touches the network or disk
beyond that journal.
"""

from .config import MockConfig, load_config
from .provider import MockProvider

__all__ = ["MockConfig", "MockProvider", "load_config"]
