"""Summaries of benchmark runs: medians with spread, a table per scenario, JSON, and a plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

#: Per scenario: the fields that identify a row, and the columns shown (first is the headline).
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "throughput": (
        ("pods",),
        (
            "pods_per_s",
            "to_ready_s",
            "delete_s",
            "peak_rss_mb",
            "cpu_s",
            "api_requests",
            "gc_pause_s",
        ),
    ),
    "latency": (("rate",), ("p99_s", "p50_s", "max_s", "ready", "gc_pause_s", "full_gcs")),
    "scheduler": (("replicas",), ("rollout_s", "pods_per_s", "available")),
    "steady": (("pods",), ("rss_mb", "idle_cpu_percent", "api_requests_per_s", "lease_max_gap_s")),
    "churn": (("pods",), ("lease_max_gap_s", "node_status_max_age_s", "to_ready_s")),
    "streaming": (
        ("payload_mb",),
        (
            "exec_cat_mb_per_s",
            "port_forward_mb_per_s",
            "logs_follow_p50_ms",
            "logs_follow_p99_ms",
            "exec_agent_cpu_s",
            "exec_apiserver_cpu_s",
            "port_forward_agent_cpu_s",
            "port_forward_apiserver_cpu_s",
        ),
    ),
}
#: For these headline metrics smaller is better.
LOWER_IS_BETTER = {
    "p99_s",
    "rollout_s",
    "rss_mb",
    "idle_cpu_percent",
    "api_requests_per_s",
    "lease_max_gap_s",
}


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return None
    return round(statistics.median(numbers), 3)


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for scenario, (keys, columns) in COLUMNS.items():
        mine = [r for r in runs if r["scenario"] == scenario]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for r in mine:
            groups.setdefault((tuple(r.get(k) for k in keys), r["contender"]), []).append(r)
        for (key_values, contender), group in groups.items():
            row: dict[str, Any] = {
                "scenario": scenario,
                "contender": contender,
                "repeats": len(group),
            }
            row.update(dict(zip(keys, key_values, strict=True)))
            for column in columns:
                row[column] = _median([g.get(column) for g in group])
            headline = [g.get(columns[0]) for g in group if g.get(columns[0]) is not None]
            row["spread"] = [min(headline), max(headline)] if headline else None
            row["complete"] = all(g.get("complete", True) for g in group)
            row["crashed"] = sum(1 for g in group if g.get("crashed"))
            row["crash_reason"] = next((g["crashed"] for g in group if g.get("crashed")), None)
            rows.append(row)
    return rows


def _ratio(rows: list[dict[str, Any]], row: dict[str, Any], other: str) -> str:
    scenario = row["scenario"]
    keys, columns = COLUMNS[scenario]
    match = next(
        (
            r
            for r in rows
            if r["scenario"] == scenario
            and r["contender"] == other
            and all(r.get(k) == row.get(k) for k in keys)
        ),
        None,
    )
    mine, theirs = row.get(columns[0]), (match or {}).get(columns[0])
    if not match or not mine or not theirs:
        return "-"
    return f"{mine / theirs:.2f}x"


def table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for scenario, (keys, columns) in COLUMNS.items():
        mine = [r for r in rows if r["scenario"] == scenario]
        if not mine:
            continue
        header = [*keys, "contender", columns[0], "min-max", "n", *columns[1:]]
        header += ["vs ceiling", "vs kwok"]
        lines.append(
            f"\n## {scenario} ({columns[0]}: {'lower' if columns[0] in LOWER_IS_BETTER else 'higher'} is better)"
        )
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in sorted(mine, key=lambda r: (*(r.get(k) or 0 for k in keys), r["contender"])):
            cells = [str(row.get(k)) for k in keys] + [
                row["contender"] + ("" if row["complete"] else " (incomplete)")
            ]
            values = ["-" if row.get(c) is None else str(row.get(c)) for c in columns]
            spread = row.get("spread")
            cells += [values[0], f"{spread[0]}-{spread[1]}" if spread else "-", str(row["repeats"])]
            cells += values[1:]
            cells += [_ratio(rows, row, "ceiling"), _ratio(rows, row, "kwok")]
            lines.append("| " + " | ".join(cells) + " |")
        for row in mine:
            if row["crash_reason"]:
                lines.append(f"\n{row['contender']} crashed: {row['crash_reason']}")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], target: Path) -> Path | None:
    """Pods/s (throughput) and p99 latency per contender, as a PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    contenders = sorted({r["contender"] for r in rows})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, scenario, key, metric, label in (
        (left, "throughput", "pods", "pods_per_s", "pods/s to Running+Ready (higher is better)"),
        (right, "latency", "rate", "p99_s", "p99 create -> Ready, s, log scale (lower is better)"),
    ):
        mine = [r for r in rows if r["scenario"] == scenario]
        sizes = sorted({r[key] for r in mine})
        width = 0.8 / max(1, len(contenders))
        for i, contender in enumerate(contenders):
            values = [
                next(
                    (r[metric] or 0 for r in mine if r["contender"] == contender and r[key] == s), 0
                )
                for s in sizes
            ]
            ax.bar([x + i * width for x in range(len(sizes))], values, width, label=contender)
        ax.set_xticks([x + width * (len(contenders) - 1) / 2 for x in range(len(sizes))])
        ax.set_xticklabels([f"{s} {'pods' if key == 'pods' else 'pods/s'}" for s in sizes])
        ax.set_title(label, fontsize=10)
        if metric == "p99_s":
            ax.set_yscale("log")  # upstream's minutes next to everyone else's milliseconds
    left.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    return target
