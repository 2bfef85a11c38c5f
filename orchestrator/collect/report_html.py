"""report.html: the whole collect in one self-contained page for a browser.

Anomalies and problems first, then every table (the same cells as summary.md,
sortable), the plots as PNG data URIs, and per configuration: its difference from
its baseline in knobs, every seed's loss curve (inline SVG) and its runs' states
with links to their run directories (relative to the output directory).
"""

from __future__ import annotations

import base64
import functools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.collect.analysis import Analysis
from orchestrator.collect.frame import records
from orchestrator.collect.html_template import CONFIGURATIONS, TEMPLATE
from orchestrator.collect.render import Table, cell_text, fmt_number

Curves = Mapping[str, tuple[list[float], list[float]]]
CURVE_WIDTH, CURVE_HEIGHT, CURVE_MARGIN = 420, 170, 34
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
IGNORED_KNOBS = ("train.seed",)
MAX_SVG_POINTS = 64


def report_html(experiment: str, stamp: str, counts_text: str, analysis: Analysis, problems: Sequence[str],
                tables: Sequence[Table], plot_pngs: Mapping[str, bytes], configurations: str) -> str:
    """The page as text. ``plot_pngs``: plot name -> PNG bytes; ``configurations``: the configurations
    section, :func:`configurations_html`."""
    import markupsafe

    return _environment().from_string(TEMPLATE).render(
        experiment=experiment, stamp=stamp, counts=counts_text, baseline=analysis.baseline,
        anomalies=[anomaly.text() for anomaly in analysis.anomalies], problems=list(problems),
        tables=[_table(table) for table in tables],
        plots=[{"name": name, "uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}
               for name, png in plot_pngs.items()],
        configurations=markupsafe.Markup(configurations),
    )


def configurations_html(analysis: Analysis, curves: Curves, experiment_dir: Path, out_dir: Path) -> str:
    """The configurations section's body: per configuration its difference from its baseline, every seed's
    loss curve and its runs (HTML, escaped), run directories linked relative to ``out_dir`` (``experiment_dir``
    resolves the relative ones). The heaviest part of the page at 10,000 runs: collect renders it while the
    plots are being drawn."""
    return _environment().from_string(CONFIGURATIONS).render(
        configs=_configurations(analysis, curves, experiment_dir, out_dir),
        metric_label=_metric_label(analysis.primary), baseline_of=lambda config: config["baseline"] or "(none)")


@functools.cache
def _environment() -> Any:
    """One jinja2 environment for both templates (autoescaping, undefined names an error)."""
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def _metric_label(primary: str | None) -> str:
    return {"f1": "F1", "exact": "EM"}.get(primary or "", primary or "metric")


def _table(table: Table) -> dict[str, Any]:
    numeric = table.numeric_columns
    rows = [list(zip(row, numeric)) for row in table.rows()]
    return {"name": table.name, "title": table.title, "columns": [str(c) for c in table.display.columns],
            "rows": rows, "note": table.note}


def _configurations(analysis: Analysis, curves: Curves, experiment_dir: Path, out_dir: Path) -> list[dict[str, Any]]:
    configs, runs = analysis.configs, analysis.runs
    if configs.empty:
        return []
    current = runs[runs["current"]]
    metric = f"metrics.{analysis.primary}" if analysis.primary else None
    # One conversion of the needed columns for all runs: converting each configuration's slice of the
    # wide frame took most of collect's time at 10,000 runs (pandas' per-frame overhead, 1,000 times).
    wanted = [c for c in ("config_id", "run_id", "owner", "seed", "status", "anomalies", "run_dir", metric)
              if c and c in current.columns]
    runs_of: dict[str, list[dict[str, Any]]] = {}
    href = _Links(experiment_dir, out_dir)
    for row in records(current, wanted):
        runs_of.setdefault(row["config_id"], []).append({
            "run_id": row["run_id"], "owner": row.get("owner", ""), "seed": cell_text(row.get("seed")),
            "status": row["status"], "anomalies": row.get("anomalies", ""),
            "metric": fmt_number(row.get(metric)) if metric else "–",
            "href": href(str(row["run_dir"])),
        })
    knob_columns = [c for c in current.columns if c.startswith("train.") and c not in IGNORED_KNOBS]
    firsts = records(current.drop_duplicates("config_id"), ["config_id", *knob_columns])
    knobs = {row.pop("config_id"): _knobs(row) for row in firsts}
    out = []
    columns = (configs.index.tolist(), configs["baseline_id"].tolist(), configs["config_words"].tolist(),
               configs["flag_labels"].tolist(), configs["flags"].tolist())
    for config_id, baseline, words, flag_labels, flags in zip(*columns):
        baseline = baseline if isinstance(baseline, str) else None
        run_rows = runs_of.get(config_id, [])
        seeds = [curves[run["run_id"]] for run in run_rows if run["run_id"] in curves and curves[run["run_id"]][0]]
        out.append({
            "id": config_id, "words": words, "flags": flag_labels,
            "baseline": baseline, "is_baseline": baseline == config_id,
            "diff": _diff(knobs.get(baseline, {}), knobs.get(config_id, {})) if baseline else [],
            "curve": loss_svg(seeds), "runs": run_rows, "open": bool(flags),
        })
    return out


def _knobs(row: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration's set knobs (``train.*`` columns of its first run, unset ones left out)."""
    return {name: value for name, value in row.items() if not _missing(value)}


def _diff(baseline: Mapping[str, Any], own: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(knob, baseline's value, this configuration's value) for every knob that differs."""
    return [(key.removeprefix("train."), cell_text(baseline.get(key, "unset")), cell_text(own.get(key, "unset")))
            for key in sorted(set(baseline) | set(own)) if baseline.get(key) != own.get(key)]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class _Links:
    """A run directory's link relative to ``out_dir``: ``experiment_dir`` relative to it once, then each
    relative run directory joined to that (10,000 ``relpath`` calls cost 0.2 s); an absolute one (a
    read-only root's) is made relative on its own."""

    def __init__(self, experiment_dir: Path, out_dir: Path) -> None:
        self._experiment_dir, self._out_dir = experiment_dir, out_dir
        self._prefix = Path(os.path.relpath(experiment_dir, out_dir)).as_posix()

    def __call__(self, run_dir: str) -> str:
        if os.path.isabs(run_dir) or ".." in run_dir or "\\" in run_dir or run_dir in ("", "."):
            return Path(os.path.relpath(self._experiment_dir / run_dir, self._out_dir)).as_posix()
        return run_dir if self._prefix == "." else f"{self._prefix}/{run_dir}"


def loss_svg(seeds: Sequence[tuple[list[float], list[float]]]) -> str:
    """An inline SVG of every seed's loss against step ("" when there is nothing to draw)."""
    points = [[(s, l) for s, l in zip(steps, losses) if math.isfinite(s) and math.isfinite(l)] for steps, losses in seeds]
    # a small picture needs few points: a study of thousands of runs keeps a page of a few MB
    points = [line[::max(1, math.ceil(len(line) / MAX_SVG_POINTS))] for line in points if line]
    if not points:
        return ""
    xs = [x for line in points for x, _ in line]
    ys = [y for line in points for _, y in line]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    width, height, margin = CURVE_WIDTH, CURVE_HEIGHT, CURVE_MARGIN

    x_scale, y_scale = (width - margin - 8) / (x1 - x0), (height - margin - 4) / (y1 - y0)
    x_left, y_base = margin - x0 * x_scale, height - margin + 10 + y0 * y_scale

    def polyline(line: list[tuple[float, float]]) -> str:
        return " ".join(f"{x_left + x * x_scale:.1f},{y_base - y * y_scale:.1f}" for x, y in line)

    lines = "".join(f'<polyline fill="none" stroke="{COLOURS[i % len(COLOURS)]}" stroke-width="1.2" '
                    f'points="{polyline(line)}"><title>seed run {i + 1}</title></polyline>'
                    for i, line in enumerate(points))
    axes = (f'<line x1="{margin}" y1="{height - margin + 10}" x2="{width - 8}" y2="{height - margin + 10}" stroke="#999"/>'
            f'<line x1="{margin}" y1="6" x2="{margin}" y2="{height - margin + 10}" stroke="#999"/>'
            f'<text x="{margin}" y="{height - 6}" font-size="10">step {x0:g}</text>'
            f'<text x="{width - 8}" y="{height - 6}" font-size="10" text-anchor="end">{x1:g}</text>'
            f'<text x="2" y="14" font-size="10">{y1:.3g}</text>'
            f'<text x="2" y="{height - margin + 10}" font-size="10">{y0:.3g}</text>')
    return (f'<svg class="loss" role="img" aria-label="training loss of {len(points)} run(s)" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{axes}{lines}</svg>')
