"""The provider as the pod controller sees it: the calls it makes (`PodLifecycle`), each named by
an `Op` and made through `ProviderCalls`, which bounds it by the provider timeout, counts it in
`virtual_kubelet_provider_calls_total{method,result}` and times it in
`virtual_kubelet_provider_call_duration_seconds{method}`.

`PodLifecycle` is the part of `Provider` the controller needs, always in push form: a provider
without `notify_pods` is wrapped by `polling.PollingProvider` before the controller sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from enum import StrEnum
from typing import Protocol, TypeVar

from ..metrics import provider_call
from ..sdk import Pod, PodCallback

__all__ = ["Op", "PodLifecycle", "ProviderCalls"]

T = TypeVar("T")


class Op(StrEnum):
    """A provider call; the value is the method's name (and the metric's `method` label)."""

    CREATE_POD = "create_pod"
    UPDATE_POD = "update_pod"
    DELETE_POD = "delete_pod"
    GET_POD = "get_pod"
    GET_POD_STATUS = "get_pod_status"
    LIST_PODS = "list_pods"
    ASSIGN_POD_IPS = "assign_pod_ips"


class PodLifecycle(Protocol):
    """The pod methods of `Provider` the controller calls, with `notify_pods` always working."""

    async def create_pod(self, pod: Pod) -> None: ...

    async def update_pod(self, pod: Pod) -> None: ...

    async def delete_pod(self, pod: Pod) -> None: ...

    async def get_pod(self, namespace: str, name: str) -> Pod | None: ...

    async def list_pods(self) -> list[Pod]: ...

    async def assign_pod_ips(self, pod: Pod) -> list[str] | None: ...

    def notify_pods(self, callback: PodCallback) -> None: ...


class ProviderCalls:
    """Makes provider calls: at most `timeout` seconds each, counted by operation and result and
    timed."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def __call__(self, op: Op, call: Awaitable[T]) -> T:
        with provider_call(op.value):
            try:
                async with asyncio.timeout(self.timeout):
                    return await call
            except TimeoutError:
                raise TimeoutError(
                    f"provider {op.value} did not return within {self.timeout:.0f} s"
                ) from None
