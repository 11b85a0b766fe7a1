"""The files the process provider's agent and shims exchange: records written by a shim or agent
of another version still read (same JSON keys, unknown ones ignored), a missing launch file is one
clear error, and the shim loads nothing but the standard library and its protocol module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from virtual_kubelet.providers.process.shim_protocol import (
    BindMount,
    ExitRecord,
    LaunchSpec,
    LaunchUnavailable,
    RunState,
    ShimSpec,
    alive,
    start_ticks,
    write_record,
)


def test_records_keep_their_json_keys(tmp_path: Path) -> None:
    # As a shim writes them (state at start, exit at the end), plus a key from a newer version.
    state = tmp_path / "state.1.json"
    state.write_text(
        json.dumps(
            {
                "run": 1,
                "shim_pid": 10,
                "shim_start": 5,
                "pid": 11,
                "pgid": 11,
                "pid_start": 6,
                "started_at": 1.5,
                "from_the_future": True,
            }
        )
    )
    assert RunState.read(state) == RunState(1, 10, 5, 11, 11, 6, 1.5)
    ended = tmp_path / "exit.1.json"
    ended.write_text(
        json.dumps(
            {
                "run": 1,
                "exit_code": 137,
                "signal": 9,
                "started_at": 1.5,
                "finished_at": 2.5,
                "error": None,
                "oom_killed": True,
            }
        )
    )
    assert ExitRecord.read(ended) == ExitRecord(1, 137, 9, 1.5, 2.5, None, True)
    write_record(ended, ExitRecord(run=2, exit_code=1))
    assert json.loads(ended.read_text())["exit_code"] == 1
    # Not there yet, or half-broken: no record.
    assert RunState.read(tmp_path / "state.2.json") is None
    state.write_text("{")
    assert RunState.read(state) is None


def test_a_spec_and_its_launch_round_trip(tmp_path: Path) -> None:
    launch_path = tmp_path / "launch.1.json"
    mounts = [BindMount(source="/v", target="/data", read_only=True, shown="/v/$(X)")]
    write_record(launch_path, LaunchSpec(argv=["sh"], env={"A": "1"}, mounts=mounts))
    spec_path = tmp_path / "spec.1.json"
    spec = ShimSpec(
        run=1,
        cwd="/",
        log_path="l",
        state_path="s",
        exit_path="e",
        launch_path=str(launch_path),
        cgroups=["/sys/fs/cgroup/memory/x"],
    )
    write_record(spec_path, spec)
    loaded = ShimSpec.load(spec_path)
    assert loaded == spec
    assert loaded.load_launch() == LaunchSpec(argv=["sh"], env={"A": "1"}, mounts=mounts)
    launch_path.unlink()  # a reboot emptied the memory-backed storage
    with pytest.raises(LaunchUnavailable, match="cannot read the container's launch file"):
        loaded.load_launch()


def test_alive_tells_a_reused_pid_apart() -> None:
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    assert alive(os.getpid(), ticks)
    assert not alive(os.getpid(), ticks + 1)
    assert not alive(None, ticks)


def test_the_shim_imports_only_the_standard_library() -> None:
    script = (
        "import sys; import virtual_kubelet.providers.process.shim; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'aiohttp', 'orjson', 'yaml') or m.startswith('virtual_kubelet.sdk')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
