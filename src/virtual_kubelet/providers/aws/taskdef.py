"""A pod as one Fargate task: the RegisterTaskDefinition request (family, containers, size,
awslogs) and the RunTask request (FARGATE, awsvpc, tags, startedBy). Pure: no AWS calls.

Containers: command -> entryPoint, args -> command (with `$(VAR)` expanded), env, ports, working
directory, emptyDir volumes as task-scoped bind mounts. Init containers run first, one after the
other (`dependsOn` SUCCESS), and are not essential; every app container is essential, so the
task stops when one of them exits, as ECS defines it. Env vars named as secrets go as ECS
`secrets` (only the ARN is sent; ECS resolves it when the task starts) unless `secret_env_mode`
is "plain". In "references" mode an env var the agent filled from a Kubernetes Secret
(`secret_env_names`) that has no ARN is refused, never sent as plain text.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from ...sdk import (
    InvalidInput,
    Pod,
    QuantityError,
    expand_command,
    parse_quantity,
    secret_env_names,
    uid_of,
)
from .config import (
    SECRETS_ANNOTATION,
    TASK_ROLE_ANNOTATION,
    AwsConfig,
    check_secret_arn,
)
from .sizing import FargateSize, round_up

#: Tags every task carries: which node runs it and which pod it is.
NODE_TAG = "virtual-kubelet.io/node"
NAMESPACE_TAG = "virtual-kubelet.io/namespace"
NAME_TAG = "virtual-kubelet.io/pod"
UID_TAG = "virtual-kubelet.io/uid"
SPEC_HASH_TAG = "virtual-kubelet.io/spec-hash"
#: The init containers' names, comma-separated: DescribeTasks does not say which containers are
#: init containers, and a restarted agent must report them as such.
INIT_CONTAINERS_TAG = "virtual-kubelet.io/init-containers"

#: The smallest Fargate task, for a pod that asks for nothing.
DEFAULT_CPU_UNITS = 256
DEFAULT_MEMORY_MIB = 512
#: Volumes the agent adds to every pod that have no meaning on Fargate (the service account token
#: is not delivered to the task; see docs/providers/aws.md).
_SKIPPED_VOLUME_PREFIX = "kube-api-access-"
_FAMILY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_STARTED_BY_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,33}$")


def family(cluster: str, namespace: str, name: str) -> str:
    """The task definition family of a pod: stable for cluster/namespace/name, at most 255 of
    [A-Za-z0-9_-]; a short hash keeps two names that differ only in unsafe characters apart."""
    cluster_name = cluster.rsplit("/", 1)[-1]
    plain = f"vk_{cluster_name}_{namespace}_{name}"
    safe = _FAMILY_UNSAFE.sub("-", plain)
    if safe == plain and len(safe) <= 255:
        return safe
    digest = hashlib.sha256(f"{cluster_name}/{namespace}/{name}".encode()).hexdigest()[:10]
    return f"{safe[:244]}_{digest}"


def started_by(node_name: str) -> str:
    """The RunTask `startedBy` of every task of a node (36 characters at most): ListTasks
    filters on it, so a restarted agent finds its own tasks in one listing."""
    if _STARTED_BY_SAFE.match(node_name):
        return f"vk-{node_name}"
    return "vk-" + hashlib.sha256(node_name.encode()).hexdigest()[:33]


@dataclass(frozen=True)
class TaskPlan:
    """What `create_pod` sends: the task definition and the RunTask arguments (less its ARN)."""

    register: dict[str, Any]
    run: dict[str, Any]
    size: FargateSize


def _quantity(value: Any, what: str) -> float:
    try:
        return float(parse_quantity(str(value)))
    except QuantityError as exc:
        raise InvalidInput(f"{what}: {exc}") from None


def _container_needs(container: dict[str, Any], where: str) -> tuple[float, float, float, float]:
    """(cpu units, memory MiB) the container may use (its limit, else its request), and its
    request, each 0 when unset."""
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    cpu_req = _quantity(requests["cpu"], f"{where} cpu request") * 1024 if "cpu" in requests else 0
    cpu_lim = _quantity(limits["cpu"], f"{where} cpu limit") * 1024 if "cpu" in limits else 0
    mem_req = (
        _quantity(requests["memory"], f"{where} memory request") / 2**20
        if "memory" in requests
        else 0
    )
    mem_lim = (
        _quantity(limits["memory"], f"{where} memory limit") / 2**20 if "memory" in limits else 0
    )
    return max(cpu_req, cpu_lim), max(mem_req, mem_lim), cpu_req, mem_lim


def task_size(pod: Pod) -> FargateSize:
    """The pod's CPU and memory (app containers summed; an init container runs alone, so the
    largest counts when it is bigger) rounded up to a valid Fargate size."""
    spec = pod["spec"]
    cpu = memory = 0.0
    for container in spec.get("containers") or []:
        c, m, _, _ = _container_needs(container, f'container "{container["name"]}"')
        cpu, memory = cpu + c, memory + m
    for container in spec.get("initContainers") or []:
        c, m, _, _ = _container_needs(container, f'init container "{container["name"]}"')
        cpu, memory = max(cpu, c), max(memory, m)
    cpu = cpu or DEFAULT_CPU_UNITS
    memory = memory or DEFAULT_MEMORY_MIB
    try:
        return round_up(cpu, memory)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def secret_arns(pod: Pod, config: AwsConfig) -> dict[str, str]:
    """env var name -> ARN: the config's `secret_env`, then the pod's annotation over it."""
    arns = dict(config.secret_env)
    raw = (pod["metadata"].get("annotations") or {}).get(SECRETS_ANNOTATION)
    if raw is None:
        return arns
    try:
        doc = json.loads(raw)
    except ValueError:
        raise InvalidInput(
            f"annotation {SECRETS_ANNOTATION} must be a JSON object of env var name -> ARN"
        ) from None
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in doc.items()
    ):
        raise InvalidInput(
            f"annotation {SECRETS_ANNOTATION} must be a JSON object of env var name -> ARN"
        )
    for name, arn in doc.items():
        try:
            arns[name] = check_secret_arn(arn, f"annotation {SECRETS_ANNOTATION}, {name}")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    return arns


def _volumes(pod: Pod) -> tuple[list[dict[str, Any]], set[str]]:
    """Task volumes (emptyDir only) and the names of volumes left out on purpose."""
    volumes: list[dict[str, Any]] = []
    skipped: set[str] = set()
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "emptyDir" in volume:
            volumes.append({"name": name})
        elif name.startswith(_SKIPPED_VOLUME_PREFIX) and "projected" in volume:
            skipped.add(name)
        else:
            kind = next((k for k in volume if k != "name"), "unknown")
            raise InvalidInput(
                f'volume "{name}" ({kind}) is not supported on Fargate by this provider: '
                "only emptyDir volumes are (see docs/providers/aws.md)"
            )
    return volumes, skipped


def _container(
    container: dict[str, Any],
    config: AwsConfig,
    arns: dict[str, str],
    from_secrets: Set[str],
    skipped_volumes: set[str],
    essential: bool,
    stop_timeout: int,
    region: str,
) -> dict[str, Any]:
    name = container["name"]
    env: list[dict[str, str]] = container.get("env") or []
    as_reference = config.secret_env_mode == "references"
    if as_reference:
        _refuse_unmapped_secrets(name, env, arns, from_secrets)
    plain = [e for e in env if not (as_reference and e["name"] in arns)]
    # A referenced secret's value must not reach the task definition through $(VAR) either.
    command, args = expand_command(container, plain)
    definition: dict[str, Any] = {
        "name": name,
        "image": container.get("image", ""),
        "essential": essential,
        "environment": [{"name": e["name"], "value": e.get("value", "")} for e in plain],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": config.log_group,
                "awslogs-region": region,
                "awslogs-stream-prefix": config.log_stream_prefix,
            },
        },
        "stopTimeout": stop_timeout,
    }
    if as_reference:
        named = {e["name"] for e in env}
        secrets = [{"name": n, "valueFrom": arn} for n, arn in sorted(arns.items()) if n in named]
        if secrets:
            definition["secrets"] = secrets
    if command:
        definition["entryPoint"] = command
    if args:
        definition["command"] = args
    if container.get("workingDir"):
        definition["workingDirectory"] = container["workingDir"]
    ports = [
        {
            "containerPort": int(p["containerPort"]),
            "protocol": str(p.get("protocol", "TCP")).lower(),
        }
        for p in container.get("ports") or []
    ]
    if ports:
        definition["portMappings"] = ports
    mounts = [
        {
            "sourceVolume": m["name"],
            "containerPath": m["mountPath"],
            "readOnly": bool(m.get("readOnly", False)),
        }
        for m in container.get("volumeMounts") or []
        if m["name"] not in skipped_volumes
    ]
    if mounts:
        definition["mountPoints"] = mounts
    _, _, cpu_request, memory_limit = _container_needs(container, f'container "{name}"')
    if cpu_request:
        definition["cpu"] = math.ceil(cpu_request)
    if memory_limit:
        definition["memory"] = math.ceil(memory_limit)
    requests = (container.get("resources") or {}).get("requests") or {}
    if "memory" in requests:
        reservation = math.ceil(_quantity(requests["memory"], f'container "{name}"') / 2**20)
        definition["memoryReservation"] = min(reservation, definition.get("memory", reservation))
    if container.get("tty"):
        definition["pseudoTerminal"] = True
    if container.get("stdin"):
        definition["interactive"] = True
    return definition


def _refuse_unmapped_secrets(
    container: str, env: list[dict[str, str]], arns: dict[str, str], from_secrets: Set[str]
) -> None:
    """A Secret's value has no place in a task definition (anyone allowed to describe it reads
    it): a Secret-sourced var needs an ARN, or the operator's explicit `secret_env_mode: plain`."""
    unmapped = [e["name"] for e in env if e["name"] in from_secrets and e["name"] not in arns]
    if unmapped:
        raise InvalidInput(
            f'container "{container}": env {", ".join(unmapped)} take their values from '
            f"Kubernetes Secrets but have no Secrets Manager or SSM ARN; name one for each in the "
            f"{SECRETS_ANNOTATION} annotation or the secret_env setting, or set secret_env_mode: "
            "plain to send Secret values as plain env (see docs/providers/aws.md)"
        )


def _tags(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in pairs.items()]


def plan(pod: Pod, config: AwsConfig, node_name: str, region: str) -> TaskPlan:
    """The task definition and RunTask request of `pod`. InvalidInput for what Fargate cannot
    run (too big, unsupported volumes, bad annotations)."""
    meta = pod["metadata"]
    spec = pod["spec"]
    size = task_size(pod)
    arns = secret_arns(pod, config)
    # No marker (a pod that did not come through the agent): only the names mapped to ARNs.
    marked = secret_env_names(pod) or {}
    volumes, skipped = _volumes(pod)
    grace = int(spec.get("terminationGracePeriodSeconds", 30))
    stop_timeout = max(2, min(grace, config.max_stop_timeout_seconds))
    inits = spec.get("initContainers") or []
    containers: list[dict[str, Any]] = []
    previous: str | None = None
    for init in inits:
        definition = _container(
            init,
            config,
            arns,
            marked.get(init["name"], frozenset()),
            skipped,
            False,
            stop_timeout,
            region,
        )
        if previous is not None:
            definition["dependsOn"] = [{"containerName": previous, "condition": "SUCCESS"}]
        containers.append(definition)
        previous = init["name"]
    for app in spec.get("containers") or []:
        definition = _container(
            app,
            config,
            arns,
            marked.get(app["name"], frozenset()),
            skipped,
            True,
            stop_timeout,
            region,
        )
        if previous is not None:
            definition["dependsOn"] = [{"containerName": previous, "condition": "SUCCESS"}]
        containers.append(definition)
    identity = {
        NODE_TAG: node_name,
        NAMESPACE_TAG: meta["namespace"],
        NAME_TAG: meta["name"],
        UID_TAG: uid_of(pod),
    }
    spec_hash = (meta.get("annotations") or {}).get("virtual-kubelet.io/spec-hash")
    if spec_hash:
        identity[SPEC_HASH_TAG] = spec_hash
    if inits:
        identity[INIT_CONTAINERS_TAG] = ",".join(c["name"] for c in inits)[:256]
    tags = {**config.tags, **identity}
    register: dict[str, Any] = {
        "family": family(config.cluster, meta["namespace"], meta["name"]),
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": str(size.cpu),
        "memory": str(size.memory),
        "containerDefinitions": containers,
        "tags": _tags(tags),
    }
    if volumes:
        register["volumes"] = volumes
    if config.execution_role_arn:
        register["executionRoleArn"] = config.execution_role_arn
    task_role = (meta.get("annotations") or {}).get(TASK_ROLE_ANNOTATION) or config.task_role_arn
    if task_role:
        register["taskRoleArn"] = task_role
    platform: dict[str, str] = {}
    if config.operating_system_family:
        platform["operatingSystemFamily"] = config.operating_system_family
    if config.cpu_architecture:
        platform["cpuArchitecture"] = config.cpu_architecture
    if platform:
        register["runtimePlatform"] = platform
    network = {
        "awsvpcConfiguration": {
            "subnets": list(config.subnets),
            "securityGroups": list(config.security_groups),
            "assignPublicIp": "ENABLED" if config.assign_public_ip else "DISABLED",
        }
    }
    if not config.security_groups:
        # ECS then uses the VPC's default security group.
        del network["awsvpcConfiguration"]["securityGroups"]
    run: dict[str, Any] = {
        "cluster": config.cluster,
        "launchType": "FARGATE",
        "platformVersion": config.platform_version,
        "count": 1,
        "startedBy": started_by(node_name),
        "networkConfiguration": network,
        "tags": _tags(tags),
    }
    return TaskPlan(register=register, run=run, size=size)
