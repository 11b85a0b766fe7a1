import asyncio
import logging

import pytest

from virtual_kubelet.agent import supervise


def test_a_failing_loop_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"crash {runs}")

    with caplog.at_level(logging.ERROR):
        asyncio.run(asyncio.wait_for(supervise("lease", flaky, initial_delay=0.01), 5))
    assert runs == 3
    assert [r.getMessage() for r in caplog.records] == [
        "lease failed; restarting it in 0 s",
        "lease failed; restarting it in 0 s",
    ]
    assert "crash 1" in caplog.records[0].exc_text  # type: ignore[operator]
