"""The process provider with shims that misbehave (real processes, no cluster): a shim that does
not start its container in time is killed before the next run, so the container never runs
twice; a deletion whose shim never reports the exit gives up, kills it and stops supervising."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from virtual_kubelet.providers.process import lifecycle, shim_start
from virtual_kubelet.providers.process.shim_protocol import alive

from .test_process_provider import Harness, make_pod, run_test, sh, status_of, until


def shims_running(state_dir: Path, spec_name: str) -> list[int]:
    """The pids of shim processes (either stage) whose command line names `spec_name`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            wanted = (b"providers.process.shim", str(state_dir).encode(), spec_name.encode())
            if all(part in cmdline for part in wanted):
                found.append(int(entry.name))
    return found


def test_a_shim_that_does_not_start_its_container_in_time_is_killed_before_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shim_start, "SHIM_START_TIMEOUT", 1.0)
    starts = tmp_path / "starts"
    pod = make_pod("slow", [sh(f"echo started >> {starts}; exec sleep 30")])
    uid = pod["metadata"]["uid"]

    async def body(h: Harness) -> None:
        # Run 1's log file is a FIFO nobody reads: its shim hangs opening it, before it starts
        # the container (as on a hung file system), and would start it once a reader came.
        container_dir = h.state_dir / "process" / uid / "main"
        container_dir.mkdir(parents=True)
        os.mkfifo(container_dir / "1.log")
        await h.provider.create_pod(pod)

        def second_run_started(p: dict[str, object]) -> bool:
            status = status_of(p)  # type: ignore[arg-type]
            return bool(status["restartCount"] == 1 and "running" in status["state"])

        running = await h.wait("slow", second_run_started)
        failed = status_of(running)["lastState"]["terminated"]
        assert failed["reason"] == "StartError"
        assert failed["message"].startswith(
            "the shim did not start the container within 1 s and was killed"
        )
        # Nothing is left of run 1's shim that could start a second copy of the container.
        await until(lambda: not shims_running(h.state_dir, "spec.1.json"))
        assert shims_running(h.state_dir, "spec.2.json")
        assert starts.read_text() == "started\n"

    run_test(tmp_path, body)


def test_a_deletion_whose_shim_never_reports_gives_up_kills_it_and_stops_supervising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "TERMINATE_SLACK", 0.5)
    pod = make_pod("stuck", [sh("exec sleep 30")], terminationGracePeriodSeconds=1)
    uid = pod["metadata"]["uid"]

    async def body(h: Harness) -> None:
        await h.provider.create_pod(pod)
        await h.running("stuck")
        run = h.run_file(pod)
        supervising = h.provider._pods[uid].task
        assert supervising is not None
        # A stuck shim: alive, but it will never write the container's exit record.
        os.kill(run["shim_pid"], signal.SIGSTOP)
        await h.provider.delete_pod(pod)
        await until(lambda: uid not in h.provider._pods)
        assert supervising.cancelled()
        # Killed (SIGKILL takes effect a moment later).
        await until(lambda: not alive(run["shim_pid"], run["shim_start"]))
        await until(lambda: not alive(run["pid"], run["pid_start"]))
        final = h.pushed[-1]
        assert final["metadata"]["uid"] == uid
        assert final["status"]["phase"] == "Failed"
        terminated = status_of(final)["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (137, "ContainerStatusUnknown")
        assert await h.provider.get_pod("default", "stuck") is None

    run_test(tmp_path, body)
