"""Timestamps in the two formats the Kubernetes API uses: Time (seconds) and MicroTime."""

from __future__ import annotations

import datetime


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime | None = None) -> str:
    """`metav1.Time`: second precision, UTC, `Z` suffix."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro(moment: datetime.datetime | None = None) -> str:
    """`metav1.MicroTime`: microsecond precision (Lease renewTime, events.k8s.io)."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(text: str) -> datetime.datetime:
    """Either format back to an aware datetime."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
