"""The binary cache: one build at a time per version, nothing half-built ever looks finished."""

import os
import threading
from pathlib import Path

import pytest

from virtual_kubelet.devcluster.build import _ensure
from virtual_kubelet.devcluster.errors import BuildError


def _fake_build(calls: list[str], gate: threading.Event | None = None):  # type: ignore[no-untyped-def]
    def build(workdir: Path, out: Path, log: Path) -> None:
        calls.append(str(workdir))
        if gate is not None:
            assert gate.wait(30)
        tool = out / "tool"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)

    return build


def test_concurrent_callers_build_once(tmp_path: Path) -> None:
    calls: list[str] = []
    gate = threading.Event()
    waiting = threading.Event()
    results: list[Path] = []

    def progress(message: str) -> None:
        if "waiting for its lock" in message:
            waiting.set()

    def run() -> None:
        results.append(
            _ensure(tmp_path / "thing", ["tool"], _fake_build(calls, gate), "thing", progress)
        )

    first = threading.Thread(target=run)
    first.start()
    second = threading.Thread(target=run)
    second.start()
    assert waiting.wait(30), "the second caller never queued behind the first"
    gate.set()
    first.join(30)
    second.join(30)
    assert len(calls) == 1
    assert results == [tmp_path / "thing" / "bin"] * 2
    assert os.access(tmp_path / "thing" / "bin" / "tool", os.X_OK)


def test_failed_build_leaves_no_bin_and_is_retried(tmp_path: Path) -> None:
    def broken(workdir: Path, out: Path, log: Path) -> None:
        (out / "tool").write_text("half")
        raise BuildError("thing", "compiler crashed", log)

    with pytest.raises(BuildError, match="compiler crashed"):
        _ensure(tmp_path / "thing", ["tool"], broken, "thing", lambda _: None)
    assert not (tmp_path / "thing" / "bin").exists()
    calls: list[str] = []
    _ensure(tmp_path / "thing", ["tool"], _fake_build(calls), "thing", lambda _: None)
    assert len(calls) == 1


def test_build_that_produces_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="produced no tool"):
        _ensure(
            tmp_path / "thing", ["tool"], lambda workdir, out, log: None, "thing", lambda _: None
        )
