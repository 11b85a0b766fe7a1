"""The files of a configMap, secret or downwardAPI volume (or projection), computed from the pod
and the cached objects, and validated like the kubelet validates a payload before writing it.

Pure: reads the pod and `VolumeSources` lookups, writes nothing. Error messages name objects, keys
and paths, never values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config_data import ConfigKind, InvalidBase64, decoded_values, lookup
from ..downward import DownwardError, metadata_field, resource_field
from .atomic_writer import File, Payload
from .sources import VolumeError, VolumeSources

__all__ = [
    "DEFAULT_MODE",
    "as_dict",
    "clean_payload",
    "downward_files",
    "file_mode",
    "is_plain_name",
    "key_files",
    "namespace_of",
    "pod_uid",
    "volumes_of",
]

DEFAULT_MODE = 0o644

_MAX_PATH = 4096
_MAX_NAME = 255
#: How messages name each kind, as the kubelet's do.
_LABEL = {"ConfigMap": "configmap", "Secret": "secret"}
_KEY_LABEL = {"ConfigMap": "config", "Secret": "secret"}


# --- reading the pod ------------------------------------------------------------------------------


def as_dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def volumes_of(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return [v for v in spec.get("volumes") or [] if isinstance(v, dict)]


def namespace_of(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("namespace") or "default")


def pod_uid(pod: Mapping[str, Any]) -> str:
    uid = (pod.get("metadata") or {}).get("uid")
    if not isinstance(uid, str) or not uid:
        raise ValueError("pod has no metadata.uid")
    return uid


def is_plain_name(name: str) -> bool:
    """Usable as one path component that stays inside its parent directory."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def file_mode(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise VolumeError("FailedMount", f"invalid file mode {value!r} (must be 0-0777)")
    return value


# --- one payload per source -----------------------------------------------------------------------


def key_files(
    sources: VolumeSources,
    kind: ConfigKind,
    namespace: str,
    name: str,
    source: Mapping[str, Any],
    mode: int,
) -> Payload:
    """The files of a configMap/secret volume or projection: every key, or the listed `items`."""
    optional = bool(source.get("optional"))
    label = _LABEL[kind]
    obj = lookup(sources, kind, namespace, name)
    if obj is None:
        if optional:
            return {}
        raise VolumeError("FailedMount", f'{label} "{name}" not found')
    try:
        values = decoded_values(kind, obj)
    except InvalidBase64 as bad:
        raise VolumeError(
            "FailedMount", f'{label} "{name}" key "{bad.key}" is not valid base64'
        ) from None
    items = source.get("items")
    if not items:
        return {key: File(data, mode) for key, data in values.items()}
    payload: Payload = {}
    for item in items:
        key = item.get("key") or ""
        if key not in values:
            if optional:
                continue
            raise VolumeError(
                "FailedMount",
                f'{label} "{name}" references non-existent {_KEY_LABEL[kind]} key: {key}',
            )
        payload[item.get("path") or ""] = File(values[key], file_mode(item.get("mode"), mode))
    return payload


def downward_files(
    pod: Mapping[str, Any], items: list[Any], mode: int, allocatable: Mapping[str, str]
) -> Payload:
    """The files of a downwardAPI volume or projection."""
    payload: Payload = {}
    for item in items:
        path = item.get("path") or ""
        field_ref = as_dict(item.get("fieldRef"))
        resource_ref = as_dict(item.get("resourceFieldRef"))
        if field_ref is not None:
            value = _field_value(pod, field_ref.get("fieldPath") or "")
        elif resource_ref is not None:
            value = _resource_value(pod, resource_ref, allocatable)
        else:
            raise VolumeError("FailedMount", f"downwardAPI item {path!r} has no source")
        payload[path] = File(value.encode(), file_mode(item.get("mode"), mode))
    return payload


def _field_value(pod: Mapping[str, Any], field_path: str) -> str:
    try:
        value = metadata_field(pod, field_path)
    except DownwardError as err:
        raise VolumeError("FailedMount", str(err)) from None
    if value is None:
        raise VolumeError("FailedMount", f"unsupported fieldPath: {field_path}")
    return value


def _resource_value(
    pod: Mapping[str, Any], ref: Mapping[str, Any], allocatable: Mapping[str, str]
) -> str:
    try:
        return resource_field(pod, ref, allocatable)
    except DownwardError as err:
        raise VolumeError("FailedMount", str(err)) from None


# --- validation -----------------------------------------------------------------------------------


def clean_payload(payload: Payload) -> Payload:
    """`payload` with every path validated and cleaned; no file may sit inside another."""
    clean: Payload = {}
    for path, file in payload.items():
        clean[_clean_path(path)] = file
    for path in clean:
        parts = path.split("/")
        for end in range(1, len(parts)):
            if "/".join(parts[:end]) in clean:
                raise VolumeError("InvalidPath", f"invalid path: {path} is inside another file")
    return clean


def _clean_path(path: str) -> str:
    """Validate an item path like the kubelet's atomic writer and return it cleaned."""
    if not path:
        raise VolumeError("InvalidPath", "invalid path: must not be empty")
    if path.startswith("/"):
        raise VolumeError("InvalidPath", f"invalid path: must be relative path: {path}")
    if len(path) > _MAX_PATH:
        raise VolumeError("InvalidPath", f"invalid path: longer than {_MAX_PATH} characters")
    if "\0" in path:
        raise VolumeError("InvalidPath", "invalid path: must not contain NUL")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise VolumeError("InvalidPath", f"invalid path: must not contain '..': {path}")
        if len(part) > _MAX_NAME:
            raise VolumeError("InvalidPath", f"invalid path: a name is over {_MAX_NAME} characters")
    if not parts:
        raise VolumeError("InvalidPath", f"invalid path: names no file: {path}")
    if parts[0].startswith(".."):
        raise VolumeError("InvalidPath", f"invalid path: must not start with '..': {path}")
    return "/".join(parts)
