"""The pod status writer when the pod cache lags behind its own writes (pure logic: a stand-in for
the API server's status subresource, and a cache the test advances by hand).

The ordering this pins down is the one that left a re-created pod Pending with a running container
after the web backend restarted (issue 12): the provider reports Pending and then Running within a
few milliseconds; the Pending patch is written, and the Running one is computed before the watch
has delivered the Pending write to the cache, which still shows the pod Running from before.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from virtual_kubelet.pods.status_writer import StatusWriter

KEY = "ns/survivor"
UID = "uid-1"
#: The strategic-merge key of each list in a pod's status that merges by item.
_MERGE_KEYS = {"conditions": "type", "containerStatuses": "name", "initContainerStatuses": "name"}


def _container(state: str, pid: int) -> dict[str, Any]:
    running = state == "running"
    status: dict[str, Any] = {
        "name": "main",
        "image": "app:1",
        "imageID": "",
        "restartCount": 0,
        "ready": running,
        "started": running,
    }
    if running:
        status["containerID"] = f"process://{pid}"
        status["state"] = {"running": {"startedAt": "2026-11-26T14:13:47Z"}}
    else:
        status["state"] = {"waiting": {"reason": "ContainerCreating"}}
    return status


def _status(phase: str, pid: int = 0) -> dict[str, Any]:
    """What the reference web backend reports: Pending while its container starts, Running once
    the process runs (with a new containerID on every start)."""
    ready = "True" if phase == "Running" else "False"
    return {
        "phase": phase,
        "startTime": "2026-11-26T14:13:47Z",
        "conditions": [
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ],
        "containerStatuses": [_container("running" if phase == "Running" else "waiting", pid)],
    }


class StatusSubresource:
    """PATCH /api/v1/namespaces/ns/pods/survivor/status as the API server applies a strategic
    merge patch to a pod's status: the uid must match, lists of conditions and container statuses
    merge by their key, other fields are replaced; every write bumps the resourceVersion and
    answers the whole pod."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.pod: dict[str, Any] = {
            "metadata": {"namespace": "ns", "name": "survivor", "uid": UID, "resourceVersion": "5"},
            "spec": {"containers": [{"name": "main", "image": "app:1"}]},
            "status": copy.deepcopy(status),
        }
        self.patches: list[dict[str, Any]] = []
        self.written = asyncio.Event()

    async def patch(self, url: str, body: Any, patch_type: str = "merge") -> Any:
        assert url.endswith("/namespaces/ns/pods/survivor/status")
        assert patch_type == "strategic"
        assert body["metadata"]["uid"] == UID
        status = self.pod["status"]
        for field, value in body["status"].items():
            merge_key = _MERGE_KEYS.get(field)
            if merge_key is None:
                status[field] = copy.deepcopy(value)
                continue
            items = {item[merge_key]: item for item in status.get(field, [])}
            for item in value:
                items[item[merge_key]] = {**items.get(item[merge_key], {}), **item}
            status[field] = list(items.values())
        meta = self.pod["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.patches.append(body)
        self.written.set()
        return copy.deepcopy(self.pod)


class Writer:
    """A StatusWriter running its worker over `api`, reading pods from `cache` (the reflector's
    store, which the test advances by hand)."""

    def __init__(self, api: StatusSubresource) -> None:
        self.api = api
        self.cache: dict[str, Any] = copy.deepcopy(api.pod)
        self.writer = StatusWriter(api, lambda key: self.cache if key == KEY else None, [], 1)  # type: ignore[arg-type]

    async def report(self, status: dict[str, Any]) -> None:
        """Report `status` and wait until it has been written."""
        self.api.written.clear()
        self.writer.report(KEY, UID, status)
        async with asyncio.timeout(10):
            await self.api.written.wait()

    def refresh_cache(self) -> None:
        """The watch delivers the API server's current pod."""
        self.cache = copy.deepcopy(self.api.pod)


async def _with_writer(api: StatusSubresource, steps: Any) -> None:
    writer = Writer(api)
    worker = asyncio.create_task(writer.writer.run())
    try:
        await steps(writer)
    finally:
        writer.writer.shutdown()
        async with asyncio.timeout(10):
            await worker


def test_a_status_written_back_before_the_cache_saw_the_write_in_between_is_not_dropped() -> None:
    # Running before the backend restarted; the cache has that (resourceVersion 5).
    api = StatusSubresource(_status("Running", pid=100))

    async def steps(writer: Writer) -> None:
        await writer.report(_status("Pending"))  # re-created: the container is starting
        assert api.pod["status"]["phase"] == "Pending"
        # The cache still shows resourceVersion 5 (Running): the watch has not delivered the
        # Pending write yet when the container runs again.
        await writer.report(_status("Running", pid=200))

    asyncio.run(_with_writer(api, steps))
    status = api.pod["status"]
    assert status["phase"] == "Running", api.patches
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "ContainersReady": "True",
        "Ready": "True",
    }
    assert status["containerStatuses"][0]["containerID"] == "process://200"


def test_once_the_cache_is_newer_than_our_last_write_it_is_the_base_again() -> None:
    api = StatusSubresource(_status("Pending"))

    async def steps(writer: Writer) -> None:
        await writer.report(_status("Running", pid=100))
        # Someone else writes the phase back (a controller, or `kubectl edit --subresource
        # status`); the cache sees it, newer than the pod our PATCH returned.
        api.pod["status"]["phase"] = "Pending"
        api.pod["metadata"]["resourceVersion"] = "40"
        writer.refresh_cache()
        await writer.report({**_status("Running", pid=100), "message": "still running"})

    asyncio.run(_with_writer(api, steps))
    assert api.pod["status"]["phase"] == "Running", api.patches
    assert api.pod["status"]["message"] == "still running"


def test_the_answer_to_our_patch_is_let_go_once_the_cache_has_caught_up() -> None:
    # A pod whose status stops changing must not keep a second full copy of itself in the
    # writer (issue 18: ~18 KB per held pod).
    api = StatusSubresource(_status("Pending"))

    async def steps(writer: Writer) -> None:
        await writer.report(_status("Running", pid=100))
        writer.writer.cache_updated(KEY, writer.cache)  # an older event: still kept
        assert KEY in writer.writer._written
        writer.refresh_cache()
        writer.writer.cache_updated(KEY, writer.cache)
        assert KEY not in writer.writer._written
        # The base of the next diff is the cache again, and the next write is right.
        await writer.report({**_status("Running", pid=100), "message": "still running"})

    asyncio.run(_with_writer(api, steps))
    assert api.pod["status"]["phase"] == "Running", api.patches
    assert api.pod["status"]["message"] == "still running"


def test_an_answer_the_cache_already_has_is_not_kept() -> None:
    # The watch often delivers our write before the PATCH's answer arrives: then there is nothing
    # to keep, and nothing may be kept for good.
    api = StatusSubresource(_status("Pending"))

    async def steps(writer: Writer) -> None:
        original = api.patch

        async def watch_first(url: str, body: Any, patch_type: str = "merge") -> Any:
            answer = await original(url, body, patch_type)
            writer.refresh_cache()
            writer.writer.cache_updated(KEY, writer.cache)
            return answer

        api.patch = watch_first  # type: ignore[method-assign]
        await writer.report(_status("Running", pid=100))
        await asyncio.sleep(0)  # let the worker finish with the answer
        assert KEY not in writer.writer._written
        await writer.report({**_status("Running", pid=100), "message": "still running"})

    asyncio.run(_with_writer(api, steps))
    assert api.pod["status"]["phase"] == "Running", api.patches
    assert api.pod["status"]["message"] == "still running"
