"""The node endpoints of the original protocol, read defensively: what `/capacity`,
`/nodeConditions` and `/nodeAddresses` answer, checked and turned into changes to the Node.

Each `parse_*` raises `BadResponse` naming the endpoint and the first thing wrong; each `apply_*`
changes the node the agent registered:
- capacity replaces `status.capacity` and `status.allocatable` (as the original did);
- conditions merge by type over the agent's own (so a backend that reports only `Ready` keeps the
  pressure conditions), with the heartbeat and transition times left to the agent;
- addresses follow the agent's InternalIP, which stays first: the API server reaches the kubelet
  port (logs) at the first InternalIP, and that port is served by the agent, not the backend.
"""

from __future__ import annotations

from typing import Any

from ...sdk import Node, QuantityError, parse_quantity
from .errors import BadResponse

__all__ = [
    "apply_addresses",
    "apply_capacity",
    "apply_conditions",
    "parse_addresses",
    "parse_capacity",
    "parse_conditions",
]

_CONDITION_STATUSES = ("True", "False", "Unknown")


def parse_capacity(answer: Any, source: str = "GET /capacity") -> dict[str, str]:
    """A ResourceList: resource name -> quantity (strings or numbers)."""
    if not isinstance(answer, dict):
        raise BadResponse(f"{source} answered {_kind(answer)}, not a resource list object")
    capacity: dict[str, str] = {}
    for name, value in answer.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BadResponse(f"{source}: {name!r} is {_kind(value)}, not a quantity")
        try:
            parse_quantity(value)
        except QuantityError:
            raise BadResponse(f"{source}: {name!r} is {value!r}, not a quantity") from None
        capacity[str(name)] = str(value)
    return capacity


def parse_conditions(answer: Any, source: str = "GET /nodeConditions") -> list[dict[str, str]]:
    """A list of NodeCondition; only type, status, reason and message are kept."""
    if answer is None:
        return []
    if not isinstance(answer, list):
        raise BadResponse(f"{source} answered {_kind(answer)}, not a list of conditions")
    conditions = []
    for i, item in enumerate(answer):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str) or not item["type"]:
            raise BadResponse(f"{source}: item {i} is not a condition with a type")
        status = item.get("status")
        if status not in _CONDITION_STATUSES:
            raise BadResponse(
                f"{source}: condition {item['type']!r} has status {status!r}, "
                "not True, False or Unknown"
            )
        condition = {"type": item["type"], "status": status}
        for field in ("reason", "message"):
            if isinstance(item.get(field), str):
                condition[field] = item[field]
        conditions.append(condition)
    return conditions


def parse_addresses(answer: Any, source: str = "GET /nodeAddresses") -> list[dict[str, str]]:
    """A list of NodeAddress (`type`, `address`)."""
    if answer is None:
        return []
    if not isinstance(answer, list):
        raise BadResponse(f"{source} answered {_kind(answer)}, not a list of addresses")
    addresses = []
    for i, item in enumerate(answer):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("type"), str)
            or not isinstance(item.get("address"), str)
            or not item["type"]
            or not item["address"]
        ):
            raise BadResponse(f"{source}: item {i} is not an address with a type")
        addresses.append({"type": item["type"], "address": item["address"]})
    return addresses


def apply_capacity(node: Node, capacity: dict[str, str]) -> None:
    status = node.setdefault("status", {})
    status["capacity"] = dict(capacity)
    status["allocatable"] = dict(capacity)


def apply_conditions(node: Node, conditions: list[dict[str, str]]) -> None:
    current = node.setdefault("status", {}).setdefault("conditions", [])
    by_type = {c["type"]: c for c in current}
    for condition in conditions:
        if condition["type"] in by_type:
            existing = by_type[condition["type"]]
            existing.update(status=condition["status"])
            existing["reason"] = condition.get("reason", "")
            existing["message"] = condition.get("message", "")
        else:
            by_type[condition["type"]] = dict(condition)
            current.append(by_type[condition["type"]])


def apply_addresses(node: Node, addresses: list[dict[str, str]], internal_ip: str) -> None:
    ours = {"type": "InternalIP", "address": internal_ip}
    merged = [ours]
    for address in addresses:
        if address != ours and address not in merged:
            merged.append(address)
    if not any(a["type"] == "Hostname" for a in merged):
        name = node.get("metadata", {}).get("name")
        if name:
            merged.append({"type": "Hostname", "address": name})
    node.setdefault("status", {})["addresses"] = merged


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )
