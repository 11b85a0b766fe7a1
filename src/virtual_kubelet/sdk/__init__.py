"""The provider SDK: everything a provider needs, in one import.

    from virtual_kubelet.sdk import NotFound, Pod, PodCallback, Provider

Every name in `__all__` is stable: it keeps its meaning and signature across minor releases, and
a change that could break a provider is announced one release ahead. Nothing else in the package
is promised to providers. See docs/providers.md.

Layering: this package owns the provider contract (`provider.py`, `capabilities.py`, `types.py`,
`container_logs.py`, `config.py`, `secret_env.py`, `pod_records.py`) and re-exports the leaf modules providers use (errors, byte
streams, `$(VAR)` expansion) and a few helpers of `virtual_kubelet.kube`. It sits above `kube` and
below `providers`; the pod, node and kubelet API layers consume the contract from here, so none
of them depends on a concrete provider.
"""

from __future__ import annotations

from .. import __version__ as AGENT_VERSION
from ..errors import InvalidInput, NotFound, ProviderError
from ..expansion import expand, expand_command
from ..kube.objects import deep_copy, key_of, uid_of
from ..kube.packed import PackedStore, Packer
from ..kube.quantity import QuantityError, format_quantity, parse_quantity
from ..kube.timefmt import micro as micro_time
from ..kube.timefmt import parse as parse_time
from ..kube.timefmt import rfc3339
from ..streams import ContainerIO, DuplexStream, InputStream, OutputStream, TermSize
from .capabilities import Capabilities
from .config import ProviderConfigError, read_mapping, validate
from .container_logs import LogOptions, format_line, select_history
from .pod_records import PodRecord, PodRecords, poll_loop
from .provider import Provider, ProviderContext, implements
from .secret_env import SECRET_ENV_ANNOTATION, secret_env_names
from .types import SPEC_HASH_ANNOTATION, Node, NodeCallback, Pod, PodCallback, PodStatus

# Grouped by topic in docs/providers.md ("The SDK"); kept sorted here.
__all__ = [
    "AGENT_VERSION",
    "SECRET_ENV_ANNOTATION",
    "SPEC_HASH_ANNOTATION",
    "Capabilities",
    "ContainerIO",
    "DuplexStream",
    "InputStream",
    "InvalidInput",
    "LogOptions",
    "Node",
    "NodeCallback",
    "NotFound",
    "OutputStream",
    "PackedStore",
    "Packer",
    "Pod",
    "PodCallback",
    "PodRecord",
    "PodRecords",
    "PodStatus",
    "Provider",
    "ProviderConfigError",
    "ProviderContext",
    "ProviderError",
    "QuantityError",
    "TermSize",
    "deep_copy",
    "expand",
    "expand_command",
    "format_line",
    "format_quantity",
    "implements",
    "key_of",
    "micro_time",
    "parse_quantity",
    "parse_time",
    "poll_loop",
    "read_mapping",
    "rfc3339",
    "secret_env_names",
    "select_history",
    "uid_of",
    "validate",
]
