"""Component processes: early exits are reported with their log, stop() only kills our own."""

import sys
from pathlib import Path

import pytest

from virtual_kubelet.devcluster.errors import StartError
from virtual_kubelet.devcluster.process import Component, ProcessRecord


def test_early_exit_reports_code_and_log_tail(tmp_path: Path) -> None:
    component = Component.spawn(
        "demo",
        ["sh", "-c", "echo 'listen tcp: address already in use' >&2; exit 3"],
        tmp_path / "demo.log",
    )
    with pytest.raises(StartError) as err:
        component.wait_ready(lambda: False, timeout=30)
    assert err.value.component == "demo"
    assert "exited early with code 3" in str(err.value)
    assert "address already in use" in str(err.value)


def test_readiness_timeout_names_what_was_awaited(tmp_path: Path) -> None:
    component = Component.spawn("sleeper", ["sleep", "60"], tmp_path / "s.log")
    try:
        with pytest.raises(
            StartError, match=r"sleeper: not healthy after 0 s \(last check: boom\)"
        ):
            component.wait_ready(_raise_boom, timeout=0.3, what="healthy")
    finally:
        component.stop()
    assert not component.record.alive()


def _raise_boom() -> bool:
    raise ConnectionRefusedError("boom")


def test_stop_escalates_to_sigkill_for_processes_ignoring_sigterm(tmp_path: Path) -> None:
    script = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    log = tmp_path / "stubborn.log"
    component = Component.spawn("stubborn", [sys.executable, "-c", script], log)
    component.wait_ready(lambda: "up" in log.read_text(), timeout=30)
    component.stop(timeout=0.5)
    assert not component.record.alive()
    assert component.exit_code() == -9


def test_a_record_whose_pid_was_reused_is_not_alive(tmp_path: Path) -> None:
    component = Component.spawn("x", ["sleep", "60"], tmp_path / "x.log")
    try:
        impostor = ProcessRecord("x", component.record.pid, component.record.start_ticks + 1, "")
        assert component.record.alive()
        assert not impostor.alive()
        Component(impostor).stop()  # must not signal a process that is not ours
        assert component.record.alive()
    finally:
        component.stop()
