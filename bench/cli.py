"""Command line of the benchmarks: run scenarios, print a table, write JSON."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import click

from . import throughput


@click.group()
def main() -> None:
    """virtual-kubelet benchmarks on a real local control plane."""


@main.command()
@click.option("--pods", default="100,1000", show_default=True, help="Comma-separated pod counts.")
@click.option("--contenders", default="agent,ceiling", show_default=True)
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1))
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True
)
def run(pods: str, contenders: str, repeats: int, out: Path) -> None:
    """Throughput: N pods to Running+Ready and deleted, per contender."""
    counts = [int(p) for p in pods.split(",")]
    chosen = [c.strip() for c in contenders.split(",")]
    unknown = set(chosen) - {"agent", "ceiling"}
    if unknown:
        raise click.BadParameter(f"unknown contenders {sorted(unknown)}", param_hint="--contenders")
    with tempfile.TemporaryDirectory(prefix="vk-bench-") as tmp:
        results = throughput.run(counts, chosen, Path(tmp), repeats)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    rows = []
    for count in counts:
        for contender in chosen:
            mine = [r for r in results if r.pods == count and r.contender == contender]
            rate = statistics.median(r.pods_per_s for r in mine)
            rows.append(
                {
                    "pods": count,
                    "contender": contender,
                    "to_running_s": statistics.median(r.create_to_running_s for r in mine),
                    "pods_per_s": rate,
                    "delete_s": statistics.median(r.delete_s for r in mine),
                    "peak_rss_mb": mine[0].agent_peak_rss_mb,
                    "cpu_s": statistics.median(r.agent_cpu_s for r in mine)
                    if mine[0].agent_cpu_s is not None
                    else None,
                    "spread_pods_per_s": [
                        min(r.pods_per_s for r in mine),
                        max(r.pods_per_s for r in mine),
                    ],
                }
            )
    click.echo(
        f"\n{'pods':>6} {'contender':<9} {'to Running':>10} {'pods/s':>8} {'delete':>8} {'RSS MB':>7} {'CPU s':>6}  vs ceiling"
    )
    for row in rows:
        ceiling = next(
            (r for r in rows if r["pods"] == row["pods"] and r["contender"] == "ceiling"), None
        )
        ratio = f"{row['pods_per_s'] / ceiling['pods_per_s']:.0%}" if ceiling else "-"
        click.echo(
            f"{row['pods']:>6} {row['contender']:<9} {row['to_running_s']:>9.2f}s {row['pods_per_s']:>8.1f} "
            f"{row['delete_s']:>7.2f}s {row['peak_rss_mb'] or '-':>7} {row['cpu_s'] if row['cpu_s'] is not None else '-':>6}  {ratio}"
        )
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "date": stamp,
        "commit": commit,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "rows": rows,
        "runs": [asdict(r) for r in results],
    }
    target = out / f"throughput-{stamp}.json"
    target.write_text(json.dumps(doc, indent=2) + "\n")
    click.echo(f"\nwritten {target}")
