"""Flag values read into settings: durations, the node's taint, its state directory, the election.

Also the defaults the options show, taken from the settings dataclasses so each lives in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..agent import AgentSettings
from ..kubelet_api.service import KubeletApiSettings
from ..node import leader

TAINT_EFFECTS = {
    "noschedule": "NoSchedule",
    "noexecute": "NoExecute",
    "prefernoschedule": "PreferNoSchedule",
}
DEFAULT_TAINT_KEY = "virtual-kubelet.io/provider"

#: Where the options' defaults come from: the settings dataclasses hold each default once.
AGENT_DEFAULTS = AgentSettings(node_name="", provider="")
KUBELET_API_DEFAULTS = KubeletApiSettings()


def duration(value: str, flag: str) -> float:
    """Seconds from "90", "90s", "5m", "1h", "1m30s"; "0" means off."""
    text = value.strip().lower()
    if text.replace(".", "", 1).isdigit():
        return float(text)
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text[i : i + 2] == "ms" else ch
        if unit not in units or not number:
            raise click.BadParameter(
                f"{value!r} is not a duration (e.g. 30s, 5m, 1h)", param_hint=flag
            )
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if number:
        raise click.BadParameter(f"{value!r} is not a duration (e.g. 30s, 5m, 1h)", param_hint=flag)
    return total


def duration_text(seconds: float) -> str:
    """A default in seconds the way `--help` shows it and `duration` reads it: "1m", "4h", "0"."""
    if seconds == 0:
        return "0"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def taints(provider: str, key: str | None, disable: bool) -> tuple[dict[str, str], ...]:
    if disable:
        return ()
    key = key or os.environ.get("VKUBELET_TAINT_KEY") or DEFAULT_TAINT_KEY
    value = os.environ.get("VKUBELET_TAINT_VALUE") or provider
    effect_text = os.environ.get("VKUBELET_TAINT_EFFECT") or "NoSchedule"
    effect = TAINT_EFFECTS.get(effect_text.lower())
    if effect is None:
        raise click.BadParameter(
            f"VKUBELET_TAINT_EFFECT={effect_text!r}; use NoSchedule, NoExecute or PreferNoSchedule"
        )
    return ({"key": key, "value": value, "effect": effect},)


def default_state_dir(node: str) -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/virtual-kubelet") / node
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "virtual-kubelet" / node


def election_settings(
    node: str,
    namespace: str,
    identity: str | None,
    lease_duration: str,
    renew_deadline: str,
    retry_period: str,
) -> leader.ElectionSettings:
    seconds = duration(lease_duration, "--leader-elect-lease-duration")
    if seconds != int(seconds) or seconds < 1:
        raise click.BadParameter(
            f"{lease_duration!r}: a Lease lasts whole seconds (at least 1s)",
            param_hint="--leader-elect-lease-duration",
        )
    try:
        return leader.ElectionSettings(
            node_name=node,
            namespace=namespace,
            identity=identity or leader.default_identity(),
            lease_duration=int(seconds),
            renew_deadline=duration(renew_deadline, "--leader-elect-renew-deadline"),
            retry_period=duration(retry_period, "--leader-elect-retry-period"),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
