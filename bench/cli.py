"""`python -m bench run`: run scenarios, print tables, write JSON (and a PNG plot)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from virtual_kubelet.devcluster import Versions

from . import memory as memory_mod
from . import report as report_mod
from . import runner
from .contenders import CONTENDERS, KWOK, UPSTREAM


@click.group()
def main() -> None:
    """virtual-kubelet benchmarks on a real local control plane (see bench/README.md)."""


@main.command()
@click.option(
    "--scenario",
    default="all",
    show_default=True,
    help=f"Comma-separated, from: {', '.join(runner.SCENARIOS)}; or all.",
)
@click.option("--contenders", default=",".join(CONTENDERS), show_default=True)
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1))
@click.option("--quick", is_flag=True, help="Small sizes (a smoke run): 100 pods, short holds.")
@click.option(
    "--timeout",
    default=600.0,
    show_default=True,
    help="Seconds one measurement may take; slower contenders are reported as incomplete.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True
)
def run(
    scenario: str, contenders: str, repeats: int, quick: bool, timeout: float, out: Path
) -> None:
    """Run the scenarios against each contender."""
    scenarios = (
        list(runner.SCENARIOS) if scenario == "all" else [s.strip() for s in scenario.split(",")]
    )
    unknown = set(scenarios) - set(runner.SCENARIOS)
    if unknown:
        raise click.BadParameter(f"unknown scenarios {sorted(unknown)}", param_hint="--scenario")
    chosen = [c.strip() for c in contenders.split(",")]
    unknown = set(chosen) - set(CONTENDERS)
    if unknown:
        raise click.BadParameter(f"unknown contenders {sorted(unknown)}", param_hint="--contenders")
    sizes = runner.QUICK if quick else runner.FULL
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    # Each measurement is appended as it is taken, so a run cut short keeps what it measured
    # (`python -m bench report` turns such a file into tables and a plot).
    partial = out / f"runs-{stamp}.jsonl"
    with partial.open("a") as sink, tempfile.TemporaryDirectory(prefix="vk-bench-") as tmp:

        def keep(result: dict[str, Any]) -> None:
            sink.write(json.dumps(result) + "\n")
            sink.flush()

        runs = runner.run(scenarios, chosen, repeats, sizes, Path(tmp), timeout, keep)
    click.echo(f"measurements in {partial}")
    _write(runs, out, stamp, runner.QUICK.__dict__ if quick else runner.FULL.__dict__)


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True
)
def report(files: tuple[Path, ...], out: Path) -> None:
    """Tables, JSON and plot from saved measurements (runs-*.jsonl or bench-*.json files).

    Later files win where two hold the same scenario and contender, so a re-run of one scenario
    can be combined with an earlier full run.
    """
    runs: list[dict[str, Any]] = []
    for file in files:
        if file.suffix == ".jsonl":
            loaded = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        else:
            loaded = json.loads(file.read_text()).get("runs", [])
        replaced = {(r["scenario"], r["contender"]) for r in loaded}
        runs = [r for r in runs if (r["scenario"], r["contender"]) not in replaced] + loaded
    if not runs:
        raise click.ClickException("no measurements in the given files")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    _write(runs, out, stamp, None)


def _write(runs: list[dict[str, Any]], out: Path, stamp: str, sizes: dict[str, Any] | None) -> None:
    rows = report_mod.summarise(runs)
    click.echo(report_mod.table(rows))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    versions = Versions.from_env()
    doc = {
        "date": stamp,
        "commit": commit,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": {
            "kubernetes": versions.kubernetes,
            "etcd": versions.etcd,
            "upstream": UPSTREAM.version,
            "kwok": KWOK.version,
        },
        "sizes": sizes,
        "rows": rows,
        "runs": runs,
    }
    target = out / f"bench-{stamp}.json"
    target.write_text(json.dumps(doc, indent=2) + "\n")
    click.echo(f"\nwritten {target}")
    picture = report_mod.plot(rows, out / f"bench-{stamp}.png")
    if picture is not None:
        click.echo(f"written {picture}")


@main.command()
@click.option("--pods", default="1000,10000", show_default=True, help="Comma-separated counts.")
@click.option(
    "--breakdown", is_flag=True, help="Run the agent under tracemalloc: bytes per pod by module."
)
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to create or delete.")
@click.option(
    "--settle",
    default=memory_mod.SETTLE_S,
    show_default=True,
    help="Seconds between the last pod Ready and reading RSS (the agent runs at most one full"
    " garbage collection a minute: 70 includes one).",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the work directory here (tracemalloc snapshots, a sample pod, agent logs).",
)
def memory(pods: str, breakdown: bool, timeout: float, settle: float, keep: Path | None) -> None:
    """RSS of our agent (mock provider) holding N pods: bytes per held pod (bench/memory.py)."""
    counts = [int(n) for n in pods.split(",") if n.strip()]
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        memory_mod.run(counts, breakdown, keep, timeout, settle)
        return
    with tempfile.TemporaryDirectory(prefix="vk-bench-mem-") as tmp:
        memory_mod.run(counts, breakdown, Path(tmp), timeout, settle)
