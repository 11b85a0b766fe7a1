"""The `aws` provider: pods as AWS Fargate tasks in an ECS cluster (docs/providers/aws.md).

- config.py: the `--provider-config` keys; clients.py: the aiobotocore clients and their errors
- sizing.py: valid Fargate CPU/memory sizes; taskdef.py: a pod as a task definition + RunTask
- status.py: a described task as a pod status; logs.py: `kubectl logs` from CloudWatch Logs
- provider.py: the Provider
"""

from .provider import AwsProvider

__all__ = ["AwsProvider"]
