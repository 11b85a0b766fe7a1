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


def task_ids(pod: Pod) -> list[str]:
    """The pod's tasks, one per container, named by the pod UID and the container's index: a
    restarted agent finds them and never adds them twice."""
    return [f"pod-{uid_of(pod)}-{i}" for i, _ in enumerate(pod["spec"].get("containers") or [])]


def _containers(pod: Pod) -> list[dict[str, Any]]:
    spec = pod["spec"]
    if spec.get("initContainers"):
        raise InvalidInput(
            "azurebatch cannot run init containers: Batch has no order between a pod's tasks"
        )
    containers: list[dict[str, Any]] = spec.get("containers") or []
    if not containers:
        raise InvalidInput("the pod has no containers")
    return containers


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
) -> list[models.BatchTaskCreateOptions]:
    """The tasks to add for `pod`, one per container (their env holds resolved values: never log
    them)."""
    meta = pod["metadata"]
    deadline = pod["spec"].get("activeDeadlineSeconds")
    built = []
    for container, task_id in zip(_containers(pod), task_ids(pod), strict=True):
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
        constraints = models.BatchTaskConstraints(max_task_retry_count=0)
        if deadline:
            constraints.max_wall_clock_time = datetime.timedelta(seconds=int(deadline))
        built.append(
            models.BatchTaskCreateOptions(
                id=task_id,
                display_name=f"{meta['namespace']}/{meta['name']}/{container['name']}"[:1024],
                command_line=command_line(container, use_containers),
                container_settings=settings,
                environment_settings=env or None,
                required_slots=required_slots(container, config),
                constraints=constraints,
            )
        )
    return built
