"""Record keeping for providers that poll a remote service: the pods they run, by namespace/name,
with the status read on demand, change reports without repeats, and the poll loop itself.

    self.records: PodRecords[Record] = PodRecords(self._with_status)
    ...
    async def get_pod(self, namespace, name):
        return self.records.get_pod(namespace, name)

A provider keeps its own record type (any object with `pod` and `deleting`), its own way of
turning a record into a pod with a status, and its own fingerprint of what is worth reporting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Protocol, TypeVar

from ..errors import NotFound
from ..kube.objects import key_of, uid_of
from .types import Pod, PodCallback, PodStatus


class PodRecord(Protocol):
    """What PodRecords needs of a provider's record."""

    @property
    def pod(self) -> Pod:
        """The pod as the provider keeps it (metadata and spec)."""
        ...

    @property
    def deleting(self) -> bool:
        """True while the provider deletes it: its status is no longer reported."""
        ...


R = TypeVar("R", bound=PodRecord)


class PodRecords(dict[str, R]):
    """A provider's records by namespace/name (a plain dict), plus the read side of the
    Provider contract and de-duplicated status reports.

    `with_status` turns a record into a copy of its pod with the current status."""

    def __init__(self, with_status: Callable[[R], Pod]) -> None:
        super().__init__()
        self.with_status = with_status
        self._reported: dict[str, Hashable] = {}

    def get_pod(self, namespace: str, name: str) -> Pod | None:
        record = self.get(f"{namespace}/{name}")
        return None if record is None else self.with_status(record)

    def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        pod = self.get_pod(namespace, name)
        return None if pod is None else pod["status"]

    def list_pods(self, *, deleting: bool = True) -> list[Pod]:
        """Every pod with its status; without those being deleted if `deleting` is False."""
        return [self.with_status(r) for r in self.values() if deleting or not r.deleting]

    def record_of(self, pod: Pod) -> R:
        """The record of this very pod (same namespace/name and UID), for update and delete;
        NotFound (with the pod's key) for a pod not run here or an older one of the same name."""
        key = key_of(pod)
        record = self.get(key)
        if record is None or uid_of(record.pod) != uid_of(pod):
            raise NotFound(key)
        return record

    def container_record(
        self, namespace: str, pod: str, container: str, *, init_containers: bool = True
    ) -> R:
        """The record of the pod that has this container (an init container counts unless
        `init_containers` is False); NotFound names the pod or the container that is unknown."""
        record = self.get(f"{namespace}/{pod}")
        if record is None:
            raise NotFound(f"pod {namespace}/{pod}")
        kinds = ("initContainers", "containers") if init_containers else ("containers",)
        names = [c["name"] for kind in kinds for c in record.pod["spec"].get(kind) or []]
        if container not in names:
            raise NotFound(f"container {container} in pod {namespace}/{pod}")
        return record

    def changed(self, key: str, fingerprint: Hashable) -> bool:
        """Whether `fingerprint` differs from the one last seen for `key` (and remember it)."""
        if key in self._reported and self._reported[key] == fingerprint:
            return False
        self._reported[key] = fingerprint
        return True

    def report_changes(
        self, notify: PodCallback | None, fingerprint: Callable[[Pod], Hashable]
    ) -> None:
        """Call `notify` with each pod (not being deleted) whose fingerprint changed since the
        last report: the agent hears of a change once, not once per poll."""
        if notify is None:
            return
        for key, record in list(self.items()):
            if record.deleting:
                continue
            pod = self.with_status(record)
            if self.changed(key, fingerprint(pod)):
                notify(pod)

    def forget(self, key: str) -> R | None:
        """Drop the record and what was last reported of it; the record, if there was one."""
        self._reported.pop(key, None)
        return self.pop(key, None)


async def poll_loop(
    wake: asyncio.Event,
    seconds: float,
    poll: Callable[[], Awaitable[object]],
    after: Callable[[], object] | None = None,
    *,
    on_error: Callable[[Exception], object] | None = None,
) -> None:
    """Forever: wait until `wake` is set or `seconds` have passed, clear it, `poll()`, then
    `after()`. With `on_error`, an exception from `poll` is handed to it (inside the except
    block, so `log.exception` shows the traceback) and the round ends without `after`; without,
    the exception ends the loop. Run it as a task; cancel the task to stop."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)
        wake.clear()
        if on_error is None:
            await poll()
        else:
            try:
                await poll()
            except Exception as exc:  # the loop outlives one failed round: the next tries again
                on_error(exc)
                continue
        if after is not None:
            after()
