"""The benchmark still runs (100 pods, our agent only): a smoke test so bench/ does not rot.
Performance is measured by `python -m bench run`, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_throughput_runs_and_writes_results(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "--quick",
            "--scenario",
            "throughput",
            "--contenders",
            "agent",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "## throughput" in result.stdout
    (written,) = tmp_path.glob("bench-*.json")
    doc = json.loads(written.read_text())
    (row,) = doc["rows"]
    assert row["contender"] == "agent"
    assert row["complete"] is True
    assert row["pods"] == 100
    assert row["pods_per_s"] > 0
    assert row["api_requests"] > 0  # counted by the API server, per contender identity
    assert doc["versions"]["kubernetes"].startswith("v1.")
    # Every measurement was also kept as it was taken, and `report` rebuilds the same table.
    (partial,) = tmp_path.glob("runs-*.jsonl")
    assert [json.loads(line)["contender"] for line in partial.read_text().splitlines()] == ["agent"]
    rebuilt = subprocess.run(
        [sys.executable, "-m", "bench", "report", str(partial), "--out", str(tmp_path / "again")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    (again,) = (tmp_path / "again").glob("bench-*.json")
    assert json.loads(again.read_text())["rows"] == doc["rows"]


def test_bench_memory_reports_bytes_per_held_pod(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "memory", "--pods", "20", "--keep", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "20 pods: RSS empty" in result.stdout, result.stdout[-2000:]
    assert "KB per pod" in result.stdout
    # The sample pod it sizes representations with is the API server's.
    (sample,) = tmp_path.glob("mem-20-*/sample-pod.json")
    assert json.loads(sample.read_text())["kind"] == "Pod"
