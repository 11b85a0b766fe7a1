"""The interLink plugin API's shapes, built and read (pure functions, no I/O).

The JSON field names are those of interLink's Go types (`pkg/interlink/types.go`, release 0.6.2),
which are authoritative; docs/providers/web.md lists them. What this module does:
- `retrieved_pod_data`: one `RetrievedPodData` for `POST /create`: the pod and, per container
  (init containers first) and per volume mount, the ConfigMaps, Secrets and projected volume
  contents it mounts, rebuilt from the files the agent materialised (`VolumeFiles`);
- `parse_create_answer`: the plugin's `CreateStruct` (an object, or a one-element array from
  older plugins) -> the job id;
- `pod_status`: one plugin `PodStatus` (container states only) -> a v1 PodStatus, the phase
  derived here from the container states, init containers first, as interLink's VK does;
- `log_request`: `LogStruct` for `GET /getLogs` from the kubelet's log options;
- `parse_ping`: the optional `PingResponse` of `GET /status` with `[]` (resources and taints).
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ...sdk import LogOptions, Pod, PodStatus, QuantityError, parse_quantity, rfc3339
from .errors import BadResponse

__all__ = [
    "JOB_ID_ANNOTATION",
    "PingInfo",
    "VolumeFiles",
    "log_request",
    "parse_create_answer",
    "parse_ping",
    "parse_statuses",
    "pod_status",
    "retrieved_pod_data",
    "sensitive_values",
]

#: Where interLink's VK keeps the plugin's job id on the pod (we keep it on our copy of the pod).
JOB_ID_ANNOTATION = "JobID"
#: Go's zero time, which a plugin reads as "no sinceTime".
_ZERO_TIME = "0001-01-01T00:00:00Z"
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

#: The files of one volume of a pod: relative path -> content (None if the volume has no files).
VolumeFiles = Callable[[str], dict[str, bytes] | None]


# --- create ------------------------------------------------------------------------------------


def retrieved_pod_data(pod: Pod, files: VolumeFiles) -> dict[str, Any]:
    """The `RetrievedPodData` of `pod`; `files(volume_name)` reads a materialised volume."""
    spec = pod.get("spec") or {}
    volumes = {v.get("name"): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
    namespace = pod["metadata"].get("namespace", "")
    cache: dict[str, dict[str, bytes] | None] = {}

    def read(name: str) -> dict[str, bytes] | None:
        if name not in cache:
            cache[name] = files(name)
        return cache[name]

    containers = []
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        entry: dict[str, Any] = {
            "name": container["name"],
            "configMaps": [],
            "projectedvolumemaps": [],
            "secrets": [],
            "emptyDirs": [],  # deprecated in interLink: plugins create emptyDirs themselves
        }
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount.get("name"))
            if volume is None:
                continue
            content = read(volume["name"])
            if volume.get("configMap") is not None and content is not None:
                source = volume["configMap"]
                entry["configMaps"].append(
                    _config_map(source.get("name", ""), namespace, _by_key(source, content))
                )
            elif volume.get("secret") is not None and content is not None:
                source = volume["secret"]
                entry["secrets"].append(
                    _secret(source.get("secretName", ""), namespace, _by_key(source, content))
                )
            elif (
                volume.get("projected") is not None or volume.get("downwardAPI") is not None
            ) and content is not None:
                # As interLink's VK: one ConfigMap named after the volume, file path -> content.
                entry["projectedvolumemaps"].append(_config_map(volume["name"], namespace, content))
        containers.append(entry)
    return {"pod": pod, "container": containers}


def _by_key(source: dict[str, Any], content: dict[str, bytes]) -> dict[str, bytes]:
    """Volume files back to the object's keys (`items` may have renamed them)."""
    items = source.get("items") or []
    if not items:
        return dict(content)
    path_to_key = {item.get("path"): item.get("key") for item in items if isinstance(item, dict)}
    return {path_to_key.get(path) or path: data for path, data in content.items()}


def _config_map(name: str, namespace: str, content: dict[str, bytes]) -> dict[str, Any]:
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for key, value in sorted(content.items()):
        try:
            data[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(value).decode()
    config_map: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,  # always present: some plugins' models require it
    }
    if binary:
        config_map["binaryData"] = binary
    return config_map


def _secret(name: str, namespace: str, content: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(content.items())},
    }


def sensitive_values(data: dict[str, Any]) -> Iterator[str]:
    """What in a `RetrievedPodData` must never be quoted back in a message: Secret data (encoded
    and decoded) and projected contents (service-account tokens)."""
    for container in data.get("container") or []:
        for secret in container.get("secrets") or []:
            for encoded in (secret.get("data") or {}).values():
                yield encoded
                try:
                    yield base64.b64decode(encoded).decode("utf-8", errors="ignore")
                except ValueError:
                    continue
        for projected in container.get("projectedvolumemaps") or []:
            yield from (projected.get("data") or {}).values()


def parse_create_answer(body: bytes, pod_uid: str) -> tuple[str, bool]:
    """(job id, whether the plugin said it): `{"PodUID","PodJID"}`, a one-element array of it
    (plugins for interLink <= 0.4), or anything else (then the pod's UID stands in)."""
    try:
        answer = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return pod_uid, False
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    if isinstance(answer, dict):
        jid = answer.get("PodJID")
        if isinstance(jid, str | int) and str(jid):
            return str(jid), True
    return pod_uid, False


# --- status ------------------------------------------------------------------------------------


def parse_statuses(answer: Any, source: str = "GET /status") -> dict[str, dict[str, Any]]:
    """The plugin's answer to a status batch: pod UID -> its PodStatus."""
    if answer is None:
        return {}
    if not isinstance(answer, list):
        raise BadResponse(f"{source} answered something other than a list of pod statuses")
    by_uid: dict[str, dict[str, Any]] = {}
    for item in answer:
        if isinstance(item, dict) and isinstance(item.get("UID"), str) and item["UID"]:
            by_uid[item["UID"]] = item
    return by_uid


def pod_status(
    pod: Pod, plugin: dict[str, Any], *, start_time: str, now: str | None = None
) -> PodStatus:
    """The v1 PodStatus of `pod` from the plugin's container states."""
    now = now or rfc3339()
    spec = pod.get("spec") or {}
    init_specs = spec.get("initContainers") or []
    specs = spec.get("containers") or []
    reported_init = _by_name(plugin.get("initContainers"))
    reported = _by_name(plugin.get("containers"))
    init_statuses = [
        _container_status(
            c, reported_init.get(c["name"]) or reported.get(c["name"]), "PodInitializing"
        )
        for c in init_specs
    ]
    statuses = [_container_status(c, reported.get(c["name"]), "ContainerCreating") for c in specs]

    init_failed = next((s for s in init_statuses if _exit_code(s) not in (None, 0)), None)
    initialized = all(_exit_code(s) == 0 for s in init_statuses)
    phase, reason, message = "Pending", None, None
    if init_failed is not None:
        phase, reason = "Failed", "Init:" + _terminated(init_failed).get("reason", "Error")
        message = f"init container {init_failed['name']} exited with {_exit_code(init_failed)}"
    elif initialized and statuses and all(_exit_code(s) is not None for s in statuses):
        failed = [s for s in statuses if _exit_code(s) != 0]
        phase = "Failed" if failed else "Succeeded"
        if failed:
            reason = "Error"
            message = ", ".join(f"{s['name']} exited with {_exit_code(s)}" for s in failed)
    elif initialized and any("running" in s["state"] for s in statuses):
        phase = "Running"
    ready = phase == "Running" and all(s["ready"] for s in statuses)
    status: PodStatus = {
        "phase": phase,
        "startTime": start_time,
        "conditions": [
            _condition("PodReadyToStartContainers", True, now),
            _condition(
                "Initialized", initialized, now, None if initialized else "ContainersNotInitialized"
            ),
            _condition("ContainersReady", ready, now, None if ready else "ContainersNotReady"),
            _condition("Ready", ready, now, None if ready else "ContainersNotReady"),
            _condition("PodScheduled", True, now),
        ],
        "containerStatuses": statuses,
    }
    if init_specs:
        status["initContainerStatuses"] = init_statuses
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return status


def pending_status(pod: Pod, *, start_time: str) -> PodStatus:
    """The status of a pod the plugin accepted but has not reported yet."""
    return pod_status(pod, {}, start_time=start_time)


def _by_name(items: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(items, list):
        return {}
    return {i["name"]: i for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)}


def _container_status(
    container: dict[str, Any], reported: dict[str, Any] | None, waiting: str
) -> dict[str, Any]:
    reported = reported or {}
    state = _state(reported.get("state"), waiting)
    running = "running" in state
    ready = reported.get("ready")
    status: dict[str, Any] = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": reported.get("imageID") if isinstance(reported.get("imageID"), str) else "",
        "ready": bool(ready) if isinstance(ready, bool) else running,
        "started": running,
        "restartCount": reported.get("restartCount")
        if isinstance(reported.get("restartCount"), int)
        else 0,
        "state": state,
    }
    if isinstance(reported.get("containerID"), str) and reported["containerID"]:
        status["containerID"] = reported["containerID"]
    last = reported.get("lastState")
    if isinstance(last, dict) and last:
        status["lastState"] = _state(last, waiting)
    return status


def _state(state: Any, waiting: str) -> dict[str, Any]:
    """One of running / terminated / waiting, checked (a bad one reads as waiting)."""
    if isinstance(state, dict):
        terminated = state.get("terminated")
        if isinstance(terminated, dict) and isinstance(terminated.get("exitCode"), int):
            clean = {k: v for k, v in terminated.items() if v not in (None, "")}
            clean.setdefault("reason", "Completed" if terminated["exitCode"] == 0 else "Error")
            return {"terminated": clean}
        running = state.get("running")
        if isinstance(running, dict):
            return {"running": {k: v for k, v in running.items() if v not in (None, "")}}
        reported_waiting = state.get("waiting")
        if isinstance(reported_waiting, dict) and reported_waiting.get("reason"):
            return {"waiting": {k: v for k, v in reported_waiting.items() if v not in (None, "")}}
    return {"waiting": {"reason": waiting}}


def _terminated(status: dict[str, Any]) -> dict[str, Any]:
    terminated: dict[str, Any] = status["state"].get("terminated") or {}
    return terminated


def _exit_code(status: dict[str, Any]) -> int | None:
    code = _terminated(status).get("exitCode")
    return code if isinstance(code, int) else None


def _condition(kind: str, ok: bool, now: str, reason: str | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastTransitionTime": now,
    }
    if reason:
        condition["reason"] = reason
    return condition


# --- logs --------------------------------------------------------------------------------------


def log_request(pod: Pod, container: str, options: LogOptions) -> dict[str, Any]:
    """The `LogStruct` for `GET /getLogs`."""
    since = options.since_time
    opts: dict[str, Any] = {
        "Tail": options.tail_lines or 0,
        "Bytes": 0,
        "Timestamps": options.timestamps,
        "Follow": options.follow,
        "Previous": options.previous,
        "SinceSeconds": options.since_seconds or 0,
        "SinceTime": _go_time(since) if since is not None else _ZERO_TIME,
    }
    # interLink refuses Tail with a byte limit; the agent applies limitBytes itself anyway.
    if options.limit_bytes and not options.tail_lines:
        opts["Bytes"] = opts["LimitBytes"] = options.limit_bytes  # LimitBytes: the Python SDK
    meta = pod["metadata"]
    return {
        "Namespace": meta.get("namespace", ""),
        "PodUID": meta.get("uid", ""),
        "PodName": meta.get("name", ""),
        "ContainerName": container,
        "Opts": opts,
    }


def _go_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- ping --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PingInfo:
    """What a ping answer says about the node; None: the plugin said nothing about it."""

    resources: dict[str, str] | None = None
    taints: list[dict[str, str]] | None = None
    problems: tuple[str, ...] = ()


def parse_ping(body: bytes) -> PingInfo:
    """A `PingResponse` (interLink >= 0.6.2), or plain text from older plugins (nothing to apply).
    Invalid entries are skipped and named in `problems`, as interLink's VK does."""
    try:
        answer = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return PingInfo()
    if not isinstance(answer, dict):
        return PingInfo()
    problems: list[str] = []
    resources: dict[str, str] | None = None
    raw = answer.get("resources")
    if isinstance(raw, dict):
        resources = {}
        for name in ("cpu", "memory", "pods"):
            value = raw.get(name)
            if value not in (None, ""):
                _add_quantity(resources, name, value, problems, integer=name == "pods")
        for accelerator in raw.get("accelerators") or []:
            if not isinstance(accelerator, dict) or not accelerator.get("resourceType"):
                problems.append("an accelerator without resourceType")
                continue
            _add_quantity(
                resources,
                str(accelerator["resourceType"]),
                accelerator.get("available"),
                problems,
                integer=True,
            )
    taints: list[dict[str, str]] | None = None
    if isinstance(answer.get("taints"), list):
        taints = list(_taints(answer["taints"], problems))
    return PingInfo(resources, taints, tuple(problems))


def _add_quantity(
    into: dict[str, str], name: str, value: Any, problems: list[str], *, integer: bool
) -> None:
    try:
        quantity = parse_quantity(value)
    except (QuantityError, TypeError):
        problems.append(f"{name}: {value!r} is not a quantity")
        return
    if integer and (quantity < 0 or quantity != quantity.to_integral_value()):
        problems.append(f"{name}: {value!r} is not a non-negative whole number")
        return
    into[name] = str(value)


def _taints(items: Iterable[Any], problems: list[str]) -> Iterator[dict[str, str]]:
    for item in items:
        if not isinstance(item, dict) or not item.get("key"):
            problems.append("a taint without a key")
            continue
        effect = item.get("effect")
        if effect not in _TAINT_EFFECTS:
            problems.append(f"taint {item['key']}: effect {effect!r} read as NoSchedule")
            effect = "NoSchedule"
        taint = {"key": str(item["key"]), "effect": effect}
        if item.get("value"):
            taint["value"] = str(item["value"])
        yield taint
