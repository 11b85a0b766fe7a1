"""The `azure` provider: pods as Azure Container Instances container groups (docs/providers/azure.md).

- config.py: the `--provider-config` keys (and the original's environment variables)
- arm.py: the Entra ID credential and ACI's async client (retries, long-running operations)
- naming.py: container group names and tags; translate.py: a pod as a container group (pure)
- status.py: a container group's instance view as a pod status
- cluster.py: Secrets read from the cluster, pod Events written to it
- logs.py: listLogs with follow; exec_ws.py: executeCommand's WebSocket
- provider.py: the Provider
"""

from .provider import AzureProvider

__all__ = ["AzureProvider"]
