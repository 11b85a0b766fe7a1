"""A pod as an Azure Batch task: ids derived from the node and the pod UID, the command line,
container settings, environment settings and required slots."""

from __future__ import annotations

import datetime
import hashlib
import math
import re
import shlex
from typing import Any

from azure.batch import models

from ...sdk import InvalidInput, Pod, QuantityError, parse_quantity, uid_of
from .config import AzureBatchConfig

#: Batch ids: letters, digits, hyphens and underscores, at most 64 characters.
_ID_BAD = re.compile(r"[^A-Za-z0-9_-]")
_ID_MAX = 64


def job_id(config: AzureBatchConfig, node_name: str) -> str:
    """The job holding this node's tasks: the prefix and the node name, made a valid Batch id
    (a hash keeps two long or odd node names apart)."""
    wanted = config.job_prefix + node_name
    clean = _ID_BAD.sub("-", wanted)
    if clean == wanted and len(clean) <= _ID_MAX:
        return clean
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:10]
    return f"{clean[: _ID_MAX - 11]}-{digest}"


def task_id(pod: Pod) -> str:
    """A pod's task: named by its UID, so a restarted agent finds it and never adds it twice."""
    return f"pod-{uid_of(pod)}"


def uid_of_task(task_id_: str) -> str | None:
    return task_id_[4:] if task_id_.startswith("pod-") else None


def _container(pod: Pod) -> dict[str, Any]:
    spec = pod["spec"]
    if spec.get("initContainers"):
        raise InvalidInput(
            "azurebatch runs one container per pod: init containers are not supported"
        )
    containers = spec.get("containers") or []
    if len(containers) != 1:
        raise InvalidInput(
            f"azurebatch runs one container per pod (a Batch task); this pod has {len(containers)}"
        )
    container: dict[str, Any] = containers[0]
    return container


def command_line(container: dict[str, Any], use_containers: bool) -> str:
    """The task's command line: the container's command and args, shell-quoted. Batch runs a
    command line without a shell; in a container task it is the container's command (the image's
    entrypoint when empty)."""
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    if not words and not use_containers:
        raise InvalidInput("the pool runs tasks without containers: the container needs a command")
    return shlex.join(str(w) for w in words)


def required_slots(container: dict[str, Any], config: AzureBatchConfig) -> int | None:
    if config.cpu_per_slot is None:
        return None
    resources = container.get("resources") or {}
    cpu = (resources.get("requests") or {}).get("cpu") or (resources.get("limits") or {}).get("cpu")
    if cpu is None:
        return 1
    try:
        cores = float(parse_quantity(str(cpu)))
    except QuantityError as exc:
        raise InvalidInput(f"cpu request {cpu!r}: {exc}") from None
    return max(1, math.ceil(cores / config.cpu_per_slot - 1e-9))


def build(
    pod: Pod, config: AzureBatchConfig, use_containers: bool
) -> models.BatchTaskCreateOptions:
    """The task to add for `pod` (its env holds resolved values: never log the result)."""
    container = _container(pod)
    env = [
        models.EnvironmentSetting(name=e["name"], value=str(e.get("value") or ""))
        for e in container.get("env") or []
    ]
    settings = None
    if use_containers:
        settings = models.BatchTaskContainerSettings(
            image_name=container["image"],
            container_run_options=config.container_run_options or None,
        )
    meta = pod["metadata"]
    task = models.BatchTaskCreateOptions(
        id=task_id(pod),
        display_name=f"{meta['namespace']}/{meta['name']}"[:1024],
        command_line=command_line(container, use_containers),
        container_settings=settings,
        environment_settings=env or None,
        required_slots=required_slots(container, config),
    )
    deadline = pod["spec"].get("activeDeadlineSeconds")
    if deadline:
        task.constraints = models.BatchTaskConstraints(
            max_wall_clock_time=datetime.timedelta(seconds=int(deadline)),
            max_task_retry_count=0,
        )
    else:
        task.constraints = models.BatchTaskConstraints(max_task_retry_count=0)
    return task
