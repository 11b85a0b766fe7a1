"""`$(VAR)` expansion as Kubernetes does it for env values, `command` and `args`.

A leaf module (no imports from the rest of the package): the pod layer uses it to resolve env, and
providers use it (through `virtual_kubelet.sdk`) to expand a container's command line. Upstream
keeps the same code in its own leaf package, `third_party/forked/golang/expansion`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["expand", "expand_command"]


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Expand `$(VAR)` references the way Kubernetes does for env values, command and args.

    Unknown references stay verbatim, `$$` is an escaped `$`, and an unterminated `$(` or a `$`
    before any other character is kept as written.
    """
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    size = len(text)
    while cursor < size:
        if text[cursor] == "$" and cursor + 1 < size:
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:
                    out.append("$(")
                    cursor += 1
                else:
                    name = text[cursor + 2 : closer]
                    value = lookup(name)
                    out.append(f"$({name})" if value is None else value)
                    cursor = closer
            else:
                # "$$" collapses to "$"; "$x" is kept whole so that its "x" is not rescanned.
                out.append("$" if following == "$" else "$" + following)
                cursor += 1
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def expand_command(
    container: dict[str, Any], env: list[dict[str, str]]
) -> tuple[list[str], list[str]]:
    """The container's command and args with `$(VAR)` expanded from its resolved env."""
    values = {entry["name"]: entry["value"] for entry in env}
    command = [expand(str(part), values.get) for part in _list(container.get("command"))]
    args = [expand(str(part), values.get) for part in _list(container.get("args"))]
    return command, args


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
