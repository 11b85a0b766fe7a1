"""`python -m bench run`: run scenarios, print tables, write JSON (and a PNG plot)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click

from virtual_kubelet.devcluster import Versions

from . import report, runner
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
    with tempfile.TemporaryDirectory(prefix="vk-bench-") as tmp:
        runs = runner.run(scenarios, chosen, repeats, sizes, Path(tmp), timeout)
    rows = report.summarise(runs)
    click.echo(report.table(rows))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
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
        "sizes": runner.QUICK.__dict__ if quick else runner.FULL.__dict__,
        "rows": rows,
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"bench-{stamp}.json"
    target.write_text(json.dumps(doc, indent=2) + "\n")
    click.echo(f"\nwritten {target}")
    picture = report.plot(rows, out / f"bench-{stamp}.png")
    if picture is not None:
        click.echo(f"written {picture}")
