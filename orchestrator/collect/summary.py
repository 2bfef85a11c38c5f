"""summary.md: anomalies and problems first, then every table, the recipes and plots."""

from __future__ import annotations

import time
from collections.abc import Sequence

from orchestrator.collect.analysis import Analysis
from orchestrator.collect.render import Table

MAX_LISTED = 50


def collected_stamp() -> str:
    """The time of a collect as the summary and report show it."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def counts_line(counts: dict[str, int]) -> str:
    """``42 runs: 38 completed, 2 failed, 1 unreadable, 1 running, 0 pending``."""
    return (f"{counts['runs_found']} runs: {counts['completed']} completed, {counts['failed']} failed, "
            f"{counts['corrupt']} unreadable, {counts['running']} running, {counts['pending']} pending")


def _bullets(title: str, items: Sequence[str], empty: str) -> list[str]:
    lines = [f"## {title}", ""]
    if not items:
        return lines + [empty, ""]
    lines += [f"- {item}" for item in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        lines.append(f"- ... and {len(items) - MAX_LISTED} more")
    return lines + [""]


def summary_tables(tables: Sequence[Table]) -> list[Table]:
    """The tables a summary shows: the combined accuracy table repeats the per-series
    ones when there are several, and a single per-series one repeats the combined."""
    per_series = [table for table in tables if table.name.startswith("accuracy_speed_")]
    return [table for table in tables
            if not (table.name == "accuracy_speed" and len(per_series) > 1)
            and not (table.name.startswith("accuracy_speed_") and len(per_series) == 1)]


def summary_markdown(
    experiment: str, analysis: Analysis, counts: dict[str, int], problems: Sequence[str],
    tables: Sequence[Table], recipes: Table | None, plots: Sequence[str], stamp: str | None = None,
) -> str:
    """The whole Markdown summary (``stamp``: when collected, now by default)."""
    stamp = stamp or collected_stamp()
    lines = [f"# Results: {experiment}", "", f"Collected {stamp}. {counts_line(counts)}."]
    if analysis.baseline:
        lines.append(f"Baseline: {analysis.baseline}.")
    lines.append("")
    lines += _bullets("Anomalies", [anomaly.text() for anomaly in analysis.anomalies], "None.")
    lines += _bullets("Problems", list(problems), "None.")
    for table in summary_tables(tables):
        lines.append(table.to_markdown(heading_level=2))
    if recipes is not None:
        lines.append(recipes.to_markdown(heading_level=2))
    if plots:
        lines += ["## Plots", ""] + [f"![{name}](plots/{name}.png)" for name in plots] + [""]
    return "\n".join(lines)
