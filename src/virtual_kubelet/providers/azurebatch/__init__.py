"""The `azurebatch` provider: pods as Azure Batch tasks (docs/providers/azurebatch.md).

- config.py: the `--provider-config` keys; client.py: the azure-batch SDK client and its errors
- tasks.py: a pod as a task (ids, command line, container settings, env, slots)
- status.py: a task as a pod status; logs.py: stdout.txt/stderr.txt for `kubectl logs`
- provider.py: the Provider
"""

from .provider import AzureBatchProvider

__all__ = ["AzureBatchProvider"]
