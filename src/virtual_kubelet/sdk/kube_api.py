"""The agent's own Kubernetes API client, for providers whose backend is itself a Kubernetes API
server (the `kubernetes` provider offloads pods to another cluster).

    from virtual_kubelet.sdk.kube_api import ApiError, KubeClient, Reflector, load_client_config

A submodule rather than names in `virtual_kubelet.sdk.__all__`: only such providers need it, and
it re-exports `virtual_kubelet.kube` unchanged (JSON dicts in and out, `ApiError` carrying the
API server's Status reason, a list-and-watch `Reflector`), so nothing new is promised beyond it.
"""

from __future__ import annotations

from ..kube.client import KubeClient, path
from ..kube.config import ClientConfig, ConfigError, from_kubeconfig
from ..kube.config import load as load_client_config
from ..kube.credentials import Credentials
from ..kube.errors import ApiError
from ..kube.reflector import CallbackHandler, Reflector

__all__ = [
    "ApiError",
    "CallbackHandler",
    "ClientConfig",
    "ConfigError",
    "Credentials",
    "KubeClient",
    "Reflector",
    "from_kubeconfig",
    "load_client_config",
    "path",
]
