"""The data of ConfigMaps and Secrets as pods consume it: one lookup and one decoder for env
(`env.py`) and volumes (`volumes/`), so both read `data`, `binaryData` and base64 the same way.

What a missing object, a missing key or an optional reference means differs between env and
volumes (different reasons and messages, Events or errors), so that stays with the callers. Nothing
here may put a value into an exception or message: Secret data must never reach a log or an Event.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal, Protocol

__all__ = ["ConfigKind", "ConfigSources", "InvalidBase64", "decoded_values", "lookup"]

ConfigKind = Literal["ConfigMap", "Secret"]


class ConfigSources(Protocol):
    """Where ConfigMaps and Secrets come from (the per-namespace caches of `resources.py`)."""

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class InvalidBase64(ValueError):
    """A base64 value (Secret `data`, ConfigMap `binaryData`) does not decode. Names the key only,
    never the value: the decoder's own message could quote part of a secret."""

    def __init__(self, key: str) -> None:
        super().__init__(f'key "{key}" is not valid base64')
        self.key = key


def lookup(
    sources: ConfigSources, kind: ConfigKind, namespace: str, name: str
) -> dict[str, Any] | None:
    """The ConfigMap or Secret `namespace/name`, or None when it does not exist."""
    if kind == "ConfigMap":
        return sources.config_map(namespace, name)
    return sources.secret(namespace, name)


def decoded_values(
    kind: ConfigKind,
    obj: Mapping[str, Any],
    *,
    only: str | None = None,
    binary_data: bool = True,
) -> dict[str, bytes]:
    """The object's keys and their bytes: a ConfigMap's `binaryData` (base64; left out when
    `binary_data` is false) and `data` (text), a Secret's `data` (base64).

    With `only`, just that key is decoded (if present): one malformed key must not break a
    reference to another. Raises `InvalidBase64` naming the key that does not decode.
    """
    values: dict[str, bytes] = {}
    if kind == "ConfigMap":
        if binary_data:
            for key, text in _map(obj.get("binaryData")).items():
                if only is None or key == only:
                    values[str(key)] = _decode(text, str(key))
        for key, text in _map(obj.get("data")).items():
            if only is None or key == only:
                values[str(key)] = str(text).encode()
        return values
    for key, text in _map(obj.get("data")).items():
        if only is None or key == only:
            values[str(key)] = _decode(text, str(key))
    return values


def _decode(text: Any, key: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBase64(key) from None


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
