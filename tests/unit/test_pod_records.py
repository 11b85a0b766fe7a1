"""The SDK's record keeping for polling providers: PodRecords (reads, container lookup, change
reports without repeats) and poll_loop (woken or timed rounds, failures)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from virtual_kubelet.sdk import NotFound, Pod, PodRecords, deep_copy, poll_loop

#: Generous: the loop's rounds are driven by events, the deadline only bounds a broken loop.
DEADLINE = 30.0


@dataclass
class _Record:
    pod: Pod
    phase: str = "Pending"
    deleting: bool = False
    reads: list[str] = field(default_factory=list)


def _pod(name: str, containers: list[str], init: list[str] | None = None) -> Pod:
    spec: dict[str, object] = {"containers": [{"name": c} for c in containers]}
    if init is not None:
        spec["initContainers"] = [{"name": c} for c in init]
    return {"metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}"}, "spec": spec}


def _with_status(record: _Record) -> Pod:
    pod: Pod = deep_copy(record.pod)
    pod["status"] = {"phase": record.phase}
    return pod


def _records(*records: _Record) -> PodRecords[_Record]:
    kept: PodRecords[_Record] = PodRecords(_with_status)
    for record in records:
        meta = record.pod["metadata"]
        kept[f"{meta['namespace']}/{meta['name']}"] = record
    return kept


def test_reads_give_the_pod_with_its_current_status() -> None:
    running = _Record(_pod("a", ["main"]), phase="Running")
    records = _records(running, _Record(_pod("b", ["main"]), deleting=True))

    pod = records.get_pod("ns", "a")
    assert pod is not None
    assert pod["status"] == {"phase": "Running"}
    assert "status" not in running.pod, "the record's pod is not changed"
    assert records.get_pod_status("ns", "a") == {"phase": "Running"}
    assert records.get_pod("ns", "missing") is None
    assert records.get_pod_status("other", "a") is None
    assert [p["metadata"]["name"] for p in records.list_pods()] == ["a", "b"]
    assert [p["metadata"]["name"] for p in records.list_pods(deleting=False)] == ["a"]


def test_record_of_is_the_same_pod_by_name_and_uid() -> None:
    record = _Record(_pod("a", ["main"]))
    records = _records(record)

    assert records.record_of(_pod("a", ["main"])) is record
    older = _pod("a", ["main"])
    older["metadata"]["uid"] = "uid-of-an-older-a"
    with pytest.raises(NotFound, match=r"^ns/a$"):
        records.record_of(older)
    with pytest.raises(NotFound, match=r"^ns/b$"):
        records.record_of(_pod("b", ["main"]))


def test_container_record_names_what_is_unknown() -> None:
    record = _Record(_pod("a", ["main", "side"], init=["setup"]))
    records = _records(record)

    assert records.container_record("ns", "a", "side") is record
    assert records.container_record("ns", "a", "setup") is record
    with pytest.raises(NotFound, match=r"^pod ns/nope$"):
        records.container_record("ns", "nope", "main")
    with pytest.raises(NotFound, match=r"^container other in pod ns/a$"):
        records.container_record("ns", "a", "other")
    with pytest.raises(NotFound, match=r"^container setup in pod ns/a$"):
        records.container_record("ns", "a", "setup", init_containers=False)


def test_each_change_is_reported_once_and_deleting_pods_not_at_all() -> None:
    a, b = _Record(_pod("a", ["main"])), _Record(_pod("b", ["main"]))
    records = _records(a, b)
    seen: list[tuple[str, str]] = []

    def notify(pod: Pod) -> None:
        seen.append((pod["metadata"]["name"], pod["status"]["phase"]))

    def fingerprint(pod: Pod) -> str:
        return str(pod["status"]["phase"])

    records.report_changes(None, fingerprint)  # no callback yet: nothing to do, nothing kept
    records.report_changes(notify, fingerprint)
    assert seen == [("a", "Pending"), ("b", "Pending")]
    records.report_changes(notify, fingerprint)
    assert seen == [("a", "Pending"), ("b", "Pending")], "no change, no report"

    a.phase, b.phase, b.deleting = "Running", "Running", True
    records.report_changes(notify, fingerprint)
    assert seen[2:] == [("a", "Running")]

    # A pod deleted and created again under the same name is new: reported even if unchanged.
    assert records.forget("ns/a") is a
    assert records.forget("ns/a") is None
    records["ns/a"] = a
    records.report_changes(notify, fingerprint)
    assert seen[3:] == [("a", "Running")]


def test_changed_remembers_the_last_fingerprint_per_key() -> None:
    records = _records()
    assert records.changed("ns/a", b"x")
    assert not records.changed("ns/a", b"x")
    assert records.changed("ns/b", b"x")
    assert records.changed("ns/a", b"y")
    assert records.changed("ns/a", b"x")


def test_poll_loop_polls_when_woken_and_reports_after_each_poll() -> None:
    async def body() -> None:
        wake = asyncio.Event()
        events: list[str] = []
        reported = asyncio.Event()

        async def poll() -> None:
            events.append("poll")

        def after() -> None:
            events.append("after")
            reported.set()

        # An hour between timed rounds: every round here is a woken one.
        task = asyncio.create_task(poll_loop(wake, 3600, poll, after))
        try:
            for round_ in (1, 2):
                reported.clear()
                wake.set()
                await asyncio.wait_for(reported.wait(), DEADLINE)
                assert events == ["poll", "after"] * round_
                assert not wake.is_set(), "the wake-up is used up by the round"
        finally:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(body())


def test_poll_loop_polls_on_its_own_every_so_many_seconds() -> None:
    async def body() -> None:
        polled = asyncio.Event()
        count = 0

        async def poll() -> None:
            nonlocal count
            count += 1
            if count == 3:
                polled.set()

        task = asyncio.create_task(poll_loop(asyncio.Event(), 0.01, poll))
        try:
            await asyncio.wait_for(polled.wait(), DEADLINE)
        finally:
            task.cancel()

    asyncio.run(body())


def test_poll_loop_survives_a_failed_round_only_with_on_error() -> None:
    async def body() -> None:
        wake = asyncio.Event()
        failures: list[str] = []
        failed = asyncio.Event()
        after_calls: list[int] = []
        second = asyncio.Event()
        rounds = 0

        async def poll() -> None:
            nonlocal rounds
            rounds += 1
            if rounds == 1:
                raise RuntimeError("service down")
            second.set()

        def on_error(exc: Exception) -> None:
            failures.append(str(exc))
            failed.set()

        task = asyncio.create_task(
            poll_loop(
                wake,
                3600,
                poll,
                lambda: after_calls.append(rounds),
                on_error=on_error,
            )
        )
        try:
            wake.set()
            await asyncio.wait_for(failed.wait(), DEADLINE)  # the first round fails ...
            wake.set()  # ... and the loop goes on to the next
            await asyncio.wait_for(second.wait(), DEADLINE)
            # (after() runs in the loop's task before it waits again, so before we resume)
            assert failures == ["service down"]
            assert after_calls == [2], "no report after the failed round"
        finally:
            task.cancel()

        # Without on_error the exception ends the loop, for the provider to see.
        async def broken() -> None:
            raise RuntimeError("bug")

        woken = asyncio.Event()
        woken.set()
        with pytest.raises(RuntimeError, match="bug"):
            await asyncio.wait_for(poll_loop(woken, 3600, broken), DEADLINE)

    asyncio.run(body())
