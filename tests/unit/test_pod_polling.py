"""The polling adapter: a provider without notify_pods, seen by the pod controller as one that
pushes each status change once, shortly after a create, and once more when a pod is gone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from virtual_kubelet.pods.lifecycle import ProviderCalls
from virtual_kubelet.pods.polling import PolledPod, PollingProvider
from virtual_kubelet.sdk import NotFound, Pod, PodStatus, Provider, ProviderContext

RUNNING = {"phase": "Running", "containerStatuses": [{"name": "c", "ready": True}]}


class PolledOnly(Provider):
    """Statuses as the test sets them; counts the polls. No notify_pods."""

    def __init__(self) -> None:
        super().__init__(ProviderContext("n", "linux", "192.0.2.1", 10250))
        self.statuses: dict[str, PodStatus | None] = {}
        self.failing: set[str] = set()
        self.polls = 0
        self.polled = asyncio.Event()

    async def create_pod(self, pod: Pod) -> None:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        self.statuses[key] = {"phase": "Pending"}

    async def update_pod(self, pod: Pod) -> None:
        pass

    async def delete_pod(self, pod: Pod) -> None:
        pass

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return None

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        self.polls += 1
        self.polled.set()
        key = f"{namespace}/{name}"
        if key in self.failing:
            raise RuntimeError("backend unreachable")
        if key not in self.statuses:
            raise NotFound(key)
        status = self.statuses[key]
        return None if status is None else dict(status)

    async def list_pods(self) -> list[Pod]:
        return []


class Harness:
    def __init__(self, pods: list[PolledPod], interval: float) -> None:
        self.provider = PolledOnly()
        self.pods = pods
        self.adapter = PollingProvider(
            self.provider,
            ProviderCalls(timeout=5),
            interval=interval,
            polled=lambda: self.pods,
            concurrency=4,
        )
        self.reports: asyncio.Queue[Pod] = asyncio.Queue()
        self.adapter.notify_pods(self.reports.put_nowait)

    async def report(self) -> Pod:
        async with asyncio.timeout(5):
            return await self.reports.get()

    async def polls(self, count: int) -> None:
        """Wait until the provider was polled `count` more times."""
        target = self.provider.polls + count
        async with asyncio.timeout(5):
            while self.provider.polls < target:
                self.provider.polled.clear()
                await self.provider.polled.wait()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


async def running(harness: Harness, body: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(harness.adapter.run())
    try:
        await body()
    finally:
        harness.adapter.close()
        async with asyncio.timeout(5):
            await task  # close() ends run()


def test_each_status_change_is_reported_once() -> None:
    async def test() -> None:
        h = Harness([("ns/a", "uid-a")], interval=0.01)
        h.provider.statuses["ns/a"] = {"phase": "Pending"}

        async def body() -> None:
            first = await h.report()
            assert first == {
                "metadata": {"namespace": "ns", "name": "a", "uid": "uid-a"},
                "status": {"phase": "Pending"},
            }
            await h.polls(3)
            assert h.reports.empty()  # unchanged: nothing to report
            h.provider.statuses["ns/a"] = RUNNING
            assert (await h.report())["status"] == RUNNING
            await h.polls(3)
            assert h.reports.empty()

        await running(h, body)

    run(test)


def test_a_pod_gone_from_the_provider_is_reported_once_without_status() -> None:
    async def test() -> None:
        h = Harness([("ns/a", "uid-a"), ("ns/b", "uid-b")], interval=0.01)
        h.provider.statuses.update({"ns/a": RUNNING, "ns/b": RUNNING})

        async def body() -> None:
            assert {(await h.report())["metadata"]["name"] for _ in range(2)} == {"a", "b"}
            h.provider.statuses["ns/a"] = None  # get_pod_status says None
            del h.provider.statuses["ns/b"]  # get_pod_status raises NotFound
            gone = [await h.report(), await h.report()]
            assert sorted(p["metadata"]["name"] for p in gone) == ["a", "b"]
            assert all("status" not in p for p in gone)
            await h.polls(4)
            assert h.reports.empty()

        await running(h, body)

    run(test)


def test_a_created_pod_is_polled_before_the_next_round() -> None:
    async def test() -> None:
        h = Harness([], interval=3600)
        pod = {"metadata": {"namespace": "ns", "name": "new", "uid": "uid-new"}, "spec": {}}

        async def body() -> None:
            await h.adapter.create_pod(pod)
            report = await h.report()
            assert report["metadata"]["uid"] == "uid-new"
            assert report["status"] == {"phase": "Pending"}

        await running(h, body)

    run(test)


def test_a_failing_poll_is_logged_and_other_pods_are_still_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def test() -> None:
        h = Harness([("ns/bad", "uid-bad"), ("ns/good", "uid-good")], interval=0.01)
        h.provider.statuses["ns/good"] = RUNNING
        h.provider.failing.add("ns/bad")

        async def body() -> None:
            assert (await h.report())["metadata"]["name"] == "good"
            h.provider.failing.clear()
            h.provider.statuses["ns/bad"] = RUNNING
            assert (await h.report())["metadata"]["name"] == "bad"

        await running(h, body)

    with caplog.at_level(logging.WARNING, logger="virtual_kubelet.pods.polling"):
        run(test)
    assert any(
        "polling the status of ns/bad failed: backend unreachable" in r.getMessage()
        for r in caplog.records
    )


def test_notify_pods_logs_that_the_provider_is_polled(caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        adapter = PollingProvider(
            PolledOnly(), ProviderCalls(timeout=5), interval=5, polled=list, concurrency=1
        )
        reports: list[Any] = []
        adapter.notify_pods(reports.append)

    with caplog.at_level(logging.INFO, logger="virtual_kubelet.pods.polling"):
        run(test)
    assert "provider does not push pod status; polling every 5 s" in caplog.text
