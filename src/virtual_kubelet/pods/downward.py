"""The downward API's values, shared by env variables and downwardAPI volume files.

`metadata_field` resolves the `metadata.*` field paths (both use them), `resource_field` a
container's `limits.*` / `requests.*` with a divisor, exactly as the kubelet computes them. Callers
turn `DownwardError` into their own error type (an env error or a mount failure).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ..kube.quantity import QuantityError, ceil_div, parse_quantity

_MAX_INT64 = 2**63 - 1
# Only these fall back to node allocatable: hugepages are never overcommitted, so a container
# using them always carries its own limit.
_ALLOCATABLE_FALLBACK = ("cpu", "memory", "ephemeral-storage")
_POD_LEVEL_RESOURCES = ("cpu", "memory")
_PLAIN_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}
_MAPS = ("metadata.labels", "metadata.annotations")
_SCALARS = {"metadata.name": "name", "metadata.namespace": "namespace", "metadata.uid": "uid"}


class DownwardError(ValueError):
    """The field path or resource reference cannot be resolved."""


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def go_quote(text: str) -> str:
    """A double-quoted string as Go's strconv.Quote writes it (the kubelet formats label and
    annotation values this way)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def format_map(values: Mapping[str, Any]) -> str:
    """Labels or annotations as the downward API renders a whole map: sorted `key="value"` lines."""
    return "\n".join(f"{key}={go_quote(str(values[key]))}" for key in sorted(values))


def split_subscript(path: str) -> tuple[str, str] | None:
    """`metadata.labels['k']` -> ("metadata.labels", "k"); None if not subscripted."""
    if not path.endswith("']"):
        return None
    field, sep, key = path[:-2].partition("['")
    if not sep or not field:
        return None
    return field, key


def metadata_field(pod: Mapping[str, Any], path: str) -> str | None:
    """The value of a `metadata.*` field path, or None if `path` is not one of those."""
    metadata = _map(pod.get("metadata"))
    subscripted = split_subscript(path)
    if subscripted is not None:
        field, key = subscripted
        if field not in _MAPS:
            raise DownwardError(f"fieldPath {path!r} does not support a subscript")
        return str(_map(metadata.get(field.partition(".")[2])).get(key, ""))
    if path in _MAPS:
        return format_map(_map(metadata.get(path.partition(".")[2])))
    if path in _SCALARS:
        return str(metadata.get(_SCALARS[path]) or "")
    return None


def find_container(pod: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    spec = _map(pod.get("spec"))
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict) and container.get("name") == name:
                return container
    return None


def resource_field(
    pod: Mapping[str, Any],
    ref: Mapping[str, Any],
    node_allocatable: Mapping[str, str],
    default_container: Mapping[str, Any] | None = None,
) -> str:
    """A `resourceFieldRef` value: the container's limit or request divided by `divisor`, rounded
    up. An unset limit falls back to the pod-level limit, then to node allocatable; an unset
    request to the limit; a zero or unset divisor means 1."""
    resource = str(ref.get("resource") or "")
    name_wanted = str(ref.get("containerName") or "")
    container = find_container(pod, name_wanted) if name_wanted else default_container
    if container is None:
        raise DownwardError(f'container "{name_wanted}" not found in the pod')
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not (
        name in _PLAIN_RESOURCES or name.startswith("hugepages-")
    ):
        raise DownwardError(f"resource {resource!r} is not supported")
    try:
        value = _container_resource(pod, container, kind, name, node_allocatable)
        divisor = parse_quantity(ref.get("divisor") or "1")
    except QuantityError as error:
        raise DownwardError(f"resource {resource}: {error}") from None
    if divisor == 0:
        divisor = Decimal(1)
    if value <= 0 or divisor < 0:
        return "0"
    return str(min(ceil_div(value, divisor), _MAX_INT64))


def _container_resource(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    kind: str,
    name: str,
    node_allocatable: Mapping[str, str],
) -> Decimal:
    resources = _map(container.get("resources"))
    limits = _map(resources.get("limits"))
    if kind == "requests":
        # The API server defaults a missing request to the container's own limit.
        quantity = _map(resources.get("requests")).get(name, limits.get(name))
        return Decimal(0) if quantity is None else parse_quantity(quantity)
    quantity = limits.get(name)
    value = Decimal(0) if quantity is None else parse_quantity(quantity)
    if value == 0 and name in _ALLOCATABLE_FALLBACK:
        fallback = _limit_fallback(pod, name, node_allocatable)
        if fallback is not None:
            return fallback
    return value


def _limit_fallback(
    pod: Mapping[str, Any], name: str, node_allocatable: Mapping[str, str]
) -> Decimal | None:
    """What an unlimited container may use: the pod-level limit, else node allocatable."""
    allocatable = node_allocatable.get(name)
    if allocatable is None:
        return None
    if name in _POD_LEVEL_RESOURCES:
        pod_limit = _map(_map(_map(pod.get("spec")).get("resources")).get("limits"))
        if pod_limit.get(name) is not None:
            value = parse_quantity(pod_limit[name])
            if value != 0:
                return value
    return parse_quantity(allocatable)
