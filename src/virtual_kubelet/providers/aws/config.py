"""The aws provider's `--provider-config`: which ECS cluster and region, the awsvpc network of
every task, the awslogs log group, how Secret-sourced env reaches the task, how botocore retries,
how often tasks are polled and what capacity the node advertises. Validated with one clear error.

Credentials are never configuration: they come from botocore's standard chain (environment,
shared files and profiles, IRSA web identity, container and instance metadata)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Pod annotations the provider reads.
ANNOTATION_PREFIX = "aws.virtual-kubelet.io/"
#: JSON object: env var name -> Secrets Manager or SSM Parameter Store ARN (ECS `secrets`).
SECRETS_ANNOTATION = ANNOTATION_PREFIX + "secrets"
#: The task's IAM role (the old provider's annotation name, kept).
TASK_ROLE_ANNOTATION = "iam.amazonaws.com/role"

_ARN = re.compile(r"^arn:aws[a-z-]*:(secretsmanager|ssm):[a-z0-9-]+:\d{12}:\S+$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_CLUSTER = re.compile(r"^(arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:cluster/)?[A-Za-z0-9_-]{1,255}$")


def check_secret_arn(value: str, where: str) -> str:
    """`value` if it is a Secrets Manager secret or SSM parameter ARN, else a clear error."""
    if not _ARN.match(value):
        raise ValueError(
            f"{where}: {value[:120]!r} is not a Secrets Manager or SSM parameter ARN "
            "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME or "
            "arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)"
        )
    return value


class Capacity(BaseModel):
    """What the node advertises: Fargate has no fixed size, so this is the scheduler's limit."""

    model_config = ConfigDict(extra="forbid")

    cpu: str = "20"
    memory: str = "40Gi"
    pods: int = Field(20, gt=0)


class AwsConfig(BaseModel):
    """Every key of the aws provider's config file. `subnets` is the only one without a default
    (RunTask with awsvpc needs at least one)."""

    model_config = ConfigDict(extra="forbid")

    #: AWS region (else AWS_REGION / AWS_DEFAULT_REGION / the profile's region).
    region: str | None = None
    #: A named profile of the shared config files (else the default chain).
    profile: str | None = None
    #: The ECS cluster the tasks run in; a dedicated cluster per node is the simplest setup.
    cluster: str = "default"
    #: Task networking (awsvpc): subnets, security groups, public IP.
    subnets: list[str] = Field(min_length=1)
    security_groups: list[str] = Field(default_factory=list)
    assign_public_ip: bool = False
    #: Fargate platform version ("LATEST" or e.g. "1.4.0"); 8 and 16 vCPU sizes need >= 1.4.0.
    platform_version: str = "LATEST"
    #: Linux or Windows tasks (runtimePlatform.operatingSystemFamily); None leaves it to ECS.
    operating_system_family: str | None = None
    cpu_architecture: Literal["X86_64", "ARM64"] | None = None
    #: The task execution role: pulls images, writes awslogs, reads `secrets` ARNs.
    execution_role_arn: str | None = None
    #: The default task role (the pod annotation iam.amazonaws.com/role overrides it).
    task_role_arn: str | None = None
    #: The awslogs log group every container writes to, and the stream prefix: a container's
    #: stream is `<prefix>/<container name>/<task id>`.
    log_group: str = "/virtual-kubelet/fargate"
    log_stream_prefix: str = "vk"
    #: Create the log group at start when it is missing (needs logs:CreateLogGroup).
    create_log_group: bool = True
    #: How env vars named in the `aws.virtual-kubelet.io/secrets` annotation or `secret_env`
    #: reach the task: "references" sends only the ARN (ECS resolves it at start, the value never
    #: enters the task definition), and refuses a pod with a Secret-sourced var that has no ARN;
    #: "plain" sends the values as ordinary env.
    secret_env_mode: Literal["references", "plain"] = "references"
    #: env var name -> ARN for every pod (a pod's annotation adds to and overrides it).
    secret_env: dict[str, str] = Field(default_factory=dict)
    #: botocore's retry mode and attempts (first try included) for throttling and 5xx answers.
    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    max_attempts: int = Field(5, ge=1, le=20)
    #: Seconds one AWS call may take to connect and to read.
    connect_timeout_seconds: float = Field(10.0, gt=0)
    read_timeout_seconds: float = Field(30.0, gt=0)
    #: Other endpoints than AWS's own (VPC endpoints, a FIPS endpoint, a local stand-in).
    ecs_endpoint_url: str | None = None
    logs_endpoint_url: str | None = None
    #: Seconds between two status polls (one DescribeTasks call per 100 tasks, for all pods).
    poll_seconds: float = Field(5.0, gt=0)
    #: Seconds between two log polls of `kubectl logs -f`.
    log_poll_seconds: float = Field(2.0, gt=0)
    #: ECS stopTimeout cap: Fargate allows at most 120 s between SIGTERM and SIGKILL.
    max_stop_timeout_seconds: int = Field(120, ge=2, le=120)
    #: Tags added to every task and task definition.
    tags: dict[str, str] = Field(default_factory=dict)
    capacity: Capacity = Field(default_factory=Capacity)

    @field_validator("secret_env")
    @classmethod
    def _secret_arns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, arn in value.items():
            check_secret_arn(arn, f"secret_env.{name}")
        return value

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        if not _CLUSTER.match(value):
            raise ValueError(f"{value!r} is not an ECS cluster name or ARN")
        return value

    @field_validator("log_stream_prefix")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} may hold only letters, digits, - and _ (1-255)")
        return value
