"""The work queue: dedupe, one worker per key, dirty re-adds, backoff, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from virtual_kubelet.kube.workqueue import ShutDown, WorkQueue, run_workers


def test_duplicates_collapse_and_order_is_fifo() -> None:
    async def main() -> list[str]:
        q = WorkQueue("t")
        for key in ["a", "b", "a", "c", "b"]:
            q.add(key)
        assert len(q) == 3
        return [await q.get() for _ in range(3)]

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_key_added_while_processing_is_handed_out_again_after_done() -> None:
    async def main() -> None:
        q = WorkQueue("t")
        q.add("a")
        key = await q.get()
        q.add("a")  # dirty while processing: must not be given to a second worker now
        assert len(q) == 0
        q.done(key)
        assert len(q) == 1
        assert await q.get() == "a"

    asyncio.run(main())


def test_never_two_workers_on_one_key() -> None:
    async def main() -> int:
        q = WorkQueue("t")
        active: set[str] = set()
        overlaps = 0
        handled = 0

        async def handle(key: str) -> None:
            nonlocal overlaps, handled
            if key in active:
                overlaps += 1
            active.add(key)
            await asyncio.sleep(0)
            if handled < 50:
                q.add(key)  # re-added while being processed
            handled += 1
            await asyncio.sleep(0)
            active.discard(key)
            if handled >= 50 and len(q) == 0 and not active:
                q.shutdown()

        for k in "abc":
            q.add(k)
        await asyncio.wait_for(run_workers(q, 8, handle), 10)
        return overlaps

    assert asyncio.run(main()) == 0


def test_backoff_grows_per_key_and_forget_resets() -> None:
    async def main() -> None:
        q = WorkQueue("t", base_delay=0.01, max_delay=0.05)
        delays = [q.add_rate_limited("k") for _ in range(5)]
        assert delays == [0.01, 0.02, 0.04, 0.05, 0.05]
        assert q.failures("k") == 5
        q.forget("k")
        assert q.failures("k") == 0
        assert await asyncio.wait_for(q.get(), 1) == "k"  # the delayed add arrived once

    asyncio.run(main())


def test_add_after_keeps_the_earliest_deadline() -> None:
    async def main() -> float:
        q = WorkQueue("t")
        loop = asyncio.get_running_loop()
        start = loop.time()
        q.add_after("k", 5.0)
        q.add_after("k", 0.02)
        q.add_after("k", 3.0)
        await asyncio.wait_for(q.get(), 2)
        return loop.time() - start

    assert asyncio.run(main()) < 1.0


def test_failing_handler_is_retried_with_backoff() -> None:
    async def main() -> int:
        q = WorkQueue("t", base_delay=0.001)
        attempts = 0

        async def handle(key: str) -> None:
            nonlocal attempts
            attempts += 1
            if attempts < 3:
                raise RuntimeError("transient")
            q.shutdown()

        q.add("k")
        await asyncio.wait_for(run_workers(q, 2, handle), 10)
        return attempts

    assert asyncio.run(main()) == 3


def test_get_after_shutdown_raises() -> None:
    async def main() -> None:
        q = WorkQueue("t")
        waiter = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        q.shutdown()
        with pytest.raises(ShutDown):
            await waiter

    asyncio.run(main())
