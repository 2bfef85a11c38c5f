"""Train-vs-validation curves: the evaluations during training (metrics.jsonl's ``EvalRecord`` lines).

A run's evaluations become ``EvalPoint`` tuples (one a split and step; a line written twice, the
last wins) and three columns: ``curve.best_step``, ``curve.best_epoch`` and ``curve.best_value``,
the best validation evaluation of the watched metric (``early_stopping.metric``, else the task's
primary metric; a loss is best lowest). A configuration's curve is the mean over its seeds at each
evaluated step, with the band from the lowest to the highest seed (min-max: with the usual 3-5
seeds a t-interval would be wider than the data and say little more). The figure is drawn in the
plot process (orchestrator/collect/plot_job.py) like the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from jobs.contract import eval_records, is_loss_metric
from jobs.tasks import TASKS

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

# (split, step, epoch, metrics): one evaluation of one split
EvalPoint = tuple[str, float, float | None, dict[str, float]]
EvalCurves = Mapping[str, Sequence[EvalPoint]]
SplitCurve = tuple[list[float], list[float], list[float], list[float]]  # steps, mean, band low, band high
MAX_CONFIGS_PER_PANEL = 6
MAX_PANELS = 6
SPLIT_STYLES = {"validation": "-", "train": "--"}


def read_eval_curve(lines: Sequence[dict[str, Any]]) -> list[EvalPoint]:
    """The evaluation lines of a metrics.jsonl, one point a (split, step), in step order."""
    points: dict[tuple[str, float], EvalPoint] = {}
    for line in eval_records(list(lines)):
        split, step, epoch, metrics = line.get("split"), line.get("step"), line.get("epoch"), line.get("metrics")
        if split not in SPLIT_STYLES or not _number(step) or not isinstance(metrics, dict):
            continue
        numbers = {str(name): float(value) for name, value in metrics.items() if _number(value)}
        points[(str(split), float(step))] = (str(split), float(step), float(epoch) if _number(epoch) else None, numbers)
    return sorted(points.values(), key=lambda point: (point[1], point[0]))


def _number(value: Any) -> TypeGuard[int | float]:
    return type(value) in (int, float)


def watched_metric(train: Mapping[str, Any]) -> str | None:
    """The metric a run's best evaluation is judged by: its ``early_stopping.metric``, else its task's primary."""
    stopping = train.get("early_stopping")
    if isinstance(stopping, dict) and isinstance(stopping.get("metric"), str):
        return str(stopping["metric"])
    task = TASKS.get(str(train.get("task", "squad_v2")))
    return task.primary_metric if task is not None else None


def best_columns(points: Sequence[EvalPoint], metric: str | None) -> dict[str, Any]:
    """``curve.*`` columns: evaluations, metric, best_step, best_epoch, best_value (None without one)."""
    scored = [point for point in points if point[0] == "validation" and metric in point[3]]
    columns: dict[str, Any] = {"curve.evaluations": sum(1 for point in points if point[0] == "validation"),
                               "curve.metric": metric, "curve.best_step": None, "curve.best_epoch": None,
                               "curve.best_value": None}
    if not scored or metric is None:
        return columns
    lower = is_loss_metric(metric)
    # the first of equal values: what the Trainer keeps as best (only a strict improvement replaces it)
    best = min(scored, key=lambda point: point[3][metric] if lower else -point[3][metric])
    columns.update({"curve.best_step": best[1], "curve.best_epoch": best[2], "curve.best_value": best[3][metric]})
    return columns


def seed_band(runs: Sequence[Sequence[EvalPoint]], split: str, metric: str) -> SplitCurve | None:
    """Mean over the seeds at each step some seed evaluated, and the min-max band; None without points."""
    import pandas as pd  # here, not at the top: parse.py imports this module on collect's no-pandas fast path

    rows = [(index, point[1], point[3][metric]) for index, points in enumerate(runs)
            for point in points if point[0] == split and metric in point[3]]
    if not rows:  # before pandas: a study without evaluations asks this of every configuration
        return None
    frame = pd.DataFrame(rows, columns=["run", "step", "value"])
    grouped = frame.groupby("step")["value"]
    steps = [float(step) for step in grouped.mean().index]
    return steps, grouped.mean().tolist(), grouped.min().tolist(), grouped.max().tolist()


def curves_figure(configs: pd.DataFrame, curves: EvalCurves, metric: str | None) -> Figure | None:
    """``metric`` during training, a panel a series: a colour a configuration, validation solid, the
    training sample dashed, each the mean over seeds with a min-max band. None without evaluations."""
    if metric is None or configs.empty:
        return None
    panels: dict[str, list[tuple[str, int, dict[str, SplitCurve]]]] = {}
    for config_id, run_ids, series in zip(configs.index, configs["run_ids"].tolist(), configs["series"].tolist()):
        run_ids = run_ids if isinstance(run_ids, list) else []
        runs = [curves[run_id] for run_id in run_ids if curves.get(run_id)]
        lines = panels.setdefault(str(series), [])
        if not runs or len(lines) >= MAX_CONFIGS_PER_PANEL:
            continue
        bands = {split: band for split in SPLIT_STYLES if (band := seed_band(runs, split, metric)) is not None}
        if bands:
            lines.append((str(config_id), len(runs), bands))
    names = [name for name in sorted(panels) if panels[name]][:MAX_PANELS]
    if not names:
        return None
    from matplotlib.figure import Figure

    columns = min(2, len(names))
    rows = (len(names) + columns - 1) // columns
    figure = Figure(figsize=(6 * columns, 3.8 * rows + 0.6), dpi=100)
    figure.subplots_adjust(left=0.8 / (6 * columns), right=0.98, hspace=0.5, wspace=0.25, top=1 - 0.8 / (3.8 * rows + 0.6))
    # two lines: one panel's width (6 in) holds about 80 characters at this size
    figure.suptitle(f"{metric} during training: validation solid, training sample dashed\n"
                    "mean over seeds; band: lowest to highest seed", fontsize=9)
    for position, series in enumerate(names, start=1):
        ax = figure.add_subplot(rows, columns, position)
        for colour, (config_id, seeds, bands) in enumerate(panels[series]):
            for split, (steps, mean, low, high) in bands.items():
                label = f"{config_id} {split} ({seeds} seed{'s' if seeds != 1 else ''})"
                ax.plot(steps, mean, SPLIT_STYLES[split], color=f"C{colour}", linewidth=1.2, label=label)
                if seeds > 1:
                    ax.fill_between(steps, low, high, color=f"C{colour}", alpha=0.15, linewidth=0)
        ax.set_title(f"series {series}")
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return figure
