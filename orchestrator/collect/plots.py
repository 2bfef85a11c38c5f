"""The figures, as matplotlib ``Figure`` objects (no pyplot: no global state, Agg output).

pareto: F1 (or accuracy) against train samples/s, the Pareto front marked;
vram: peak VRAM a configuration against the GPU memory line; loss_curves: training
loss from metrics.jsonl of every seed, one panel a series; lora_rank: metric against LoRA rank
for every base configuration swept over ranks; train_vs_validation: the primary metric during training
(orchestrator/collect/curves.py); scaling: the primary metric against the number of training examples N
(orchestrator/collect/scaling.py); transfer_vs_scratch: the validation metric during training of each
init_from configuration against its from-scratch baseline (orchestrator/collect/transfer.py). A figure with nothing to show is
left out. Large studies are thinned so a figure stays readable and fast to draw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from orchestrator.collect.analysis import Analysis
from orchestrator.collect.curves import EvalCurves, curves_figure
from orchestrator.collect.scaling import scaling_figure, scaling_points
from orchestrator.collect.transfer import transfer_curves_figure, transfer_pairs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_LABELLED_POINTS = 40
MAX_BARS = 40
MAX_CURVES_PER_PANEL = 8
MAX_PANELS = 6
Curves = Mapping[str, tuple[list[float], list[float]]]


def build_figures(analysis: Analysis, curves: Curves, gpu_memory_mib: float | None,
                  eval_curves: EvalCurves | None = None) -> dict[str, Figure]:
    """name -> figure for every plot that has data."""
    done = analysis.configs[analysis.configs["n"] > 0] if not analysis.configs.empty else analysis.configs
    figures = {
        "pareto": pareto_figure(done, analysis.primary, analysis.baseline),
        "vram": vram_figure(done, gpu_memory_mib),
        "loss_curves": loss_figure(done, curves),
        "lora_rank": rank_figure(done, analysis.primary),
        "train_vs_validation": curves_figure(done, eval_curves or {}, analysis.primary),
        "scaling": scaling_figure(scaling_points(analysis), analysis.primary),
        "transfer_vs_scratch": transfer_curves_figure(done, eval_curves or {}, transfer_pairs(analysis.runs)),
    }
    return {name: figure for name, figure in figures.items() if figure is not None}


def _figure(width: float, height: float, left_in: float = 0.8) -> Figure:
    """A figure with fixed margins (a layout engine costs more than drawing the plot)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    figure.subplots_adjust(left=left_in / width, right=1 - 0.2 / width, bottom=0.6 / height, top=1 - 0.45 / height,
                           hspace=0.45, wspace=0.25)
    return figure


def _label(primary: str | None) -> str:
    return "F1" if primary == "f1" else str(primary)


def pareto_figure(configs: pd.DataFrame, primary: str | None, baseline: str | None) -> Figure | None:
    """Metric against train samples/s; the front (no healthy config faster and better) in red,
    anomalous configurations as grey crosses, off the front."""
    ycol = f"{primary}_mean"
    if configs.empty or ycol not in configs or "train_samples_per_s_mean" not in configs:
        return None
    data = configs[[ycol, "train_samples_per_s_mean", "pareto", "flags"]].dropna(subset=[ycol,
                                                                                         "train_samples_per_s_mean"])
    if data.empty:
        return None
    fig = _figure(7.5, 5)
    ax = fig.add_subplot()
    x, y, front = data["train_samples_per_s_mean"], data[ycol], data["pareto"].astype(bool)
    flagged = data["flags"].astype(bool)
    front &= ~flagged  # analysis already leaves anomalies out of the front; never draw one on it
    ax.scatter(x[~front & ~flagged], y[~front & ~flagged], color="tab:blue", label="configuration", zorder=2)
    if flagged.any():
        ax.scatter(x[flagged], y[flagged], color="tab:gray", marker="x", label="anomaly (not on the front)",
                   zorder=2)
    order = np.argsort(x[front].to_numpy())
    ax.step(x[front].to_numpy()[order], y[front].to_numpy()[order], where="post", color="tab:red", alpha=0.6)
    ax.scatter(x[front], y[front], color="tab:red", label="Pareto front", zorder=3)
    if baseline in data.index:
        ax.scatter([x[baseline]], [y[baseline]], s=180, facecolors="none", edgecolors="black", label=f"baseline {baseline}")
    if len(data) <= MAX_LABELLED_POINTS:
        for config_id in data.index:
            ax.annotate(str(config_id), (x[config_id], y[config_id]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    ax.set_xlabel("train samples/s (mean over seeds)")
    ax.set_ylabel(f"{_label(primary)} (mean over seeds)")
    ax.set_title(f"{_label(primary)} vs training throughput")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def vram_figure(configs: pd.DataFrame, gpu_memory_mib: float | None) -> Figure | None:
    """Peak allocated and reserved VRAM a configuration, with the GPU's memory as a line."""
    if configs.empty or "peak_allocated_mib_mean" not in configs:
        return None
    columns = [name for name in ("peak_allocated_mib_mean", "peak_reserved_mib_mean") if name in configs]
    data = configs[columns].dropna(how="all")
    if data.empty:
        return None
    title = "Peak VRAM a configuration"
    if len(data) > MAX_BARS:
        data = data.loc[data[columns[-1]].nlargest(MAX_BARS).index]
        title += f" (the {MAX_BARS} largest of {len(configs)})"
    data = data.iloc[::-1]
    longest = max(len(str(index)) for index in data.index)
    fig = _figure(7.5, max(2.5, 0.28 * len(data) + 1.2), left_in=0.3 + 0.065 * min(longest, 40))
    ax = fig.add_subplot()
    positions = np.arange(len(data))
    if "peak_reserved_mib_mean" in data:
        ax.barh(positions, data["peak_reserved_mib_mean"], color="tab:orange", alpha=0.5, label="peak reserved")
    ax.barh(positions, data["peak_allocated_mib_mean"], height=0.5, color="tab:blue", label="peak allocated")
    line = gpu_memory_mib or (configs["device_total_mib_mean"].max() if "device_total_mib_mean" in configs else None)
    if line and np.isfinite(line):
        ax.axvline(float(line), color="tab:red", linestyle="--", label=f"GPU memory ({line:,.0f} MiB)")
    ax.set_yticks(positions, [str(index) for index in data.index], fontsize=8)
    ax.set_xlabel("MiB")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def loss_figure(configs: pd.DataFrame, curves: Curves) -> Figure | None:
    """Training loss of every finished run (every seed: one thin line each, one colour a
    configuration), one panel a series."""
    panels: dict[str, list[tuple[str, list[tuple[list[float], list[float]]]]]] = {}
    for config_id, run_ids, series in zip(configs.index, configs["run_ids"].tolist(), configs["series"].tolist()):
        run_ids = run_ids if isinstance(run_ids, list) else []
        seeds = [curves[rid] for rid in run_ids if rid in curves and curves[rid][0]]
        if not seeds:
            continue
        lines = panels.setdefault(str(series), [])
        if len(lines) < MAX_CURVES_PER_PANEL:
            lines.append((str(config_id), seeds))
    if not panels:
        return None
    names = sorted(panels)[:MAX_PANELS]
    columns = min(2, len(names))
    rows = (len(names) + columns - 1) // columns
    fig = _figure(6 * columns, 3.6 * rows + 0.3)
    fig.subplots_adjust(hspace=0.5 / max(1, rows) + 0.3)
    fig.suptitle("every seed drawn: one thin line a run, one colour a configuration", fontsize=9)
    from matplotlib.collections import LineCollection

    for position, series in enumerate(names, start=1):
        ax = fig.add_subplot(rows, columns, position)
        for colour, (config_id, seeds) in enumerate(panels[series]):
            # one artist a configuration, its seeds the segments (a Line2D a run cost most of the figure's time);
            # a non-finite loss (a diverged run) is a gap in its line, as plot() draws it
            segments = [np.column_stack([steps, np.where(np.isfinite(losses), losses, np.nan)])
                        for steps, losses in seeds]
            ax.add_collection(LineCollection(segments, colors=f"C{colour}", linewidths=0.9, alpha=0.8,
                                             label=f"{config_id} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"))
        ax.autoscale_view()
        ax.set_title(f"series {series}")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def rank_figure(configs: pd.DataFrame, primary: str | None) -> Figure | None:
    """Metric (mean, 95% CI) against LoRA rank for each base swept over at least two ranks."""
    ycol = f"{primary}_mean"
    if configs.empty or "train.lora.r" not in configs or ycol not in configs:
        return None
    data = configs.dropna(subset=["train.lora.r", ycol])
    sweeps = [(base, group) for base, group in data.groupby("base_name") if group["train.lora.r"].nunique() >= 2]
    if not sweeps:
        return None
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    for base, group in sweeps[:MAX_CURVES_PER_PANEL]:
        group = group.sort_values("train.lora.r")
        ranks, means = group["train.lora.r"].astype(float), group[ycol]
        low = group.get(f"{primary}_ci_low", means).fillna(means)
        high = group.get(f"{primary}_ci_high", means).fillna(means)
        ax.errorbar(ranks, means, yerr=[means - low, high - means], marker="o", capsize=3, label=str(base))
    ax.set_xscale("log", base=2)
    ranks_seen = sorted({float(r) for _, group in sweeps for r in group["train.lora.r"]})
    ax.set_xticks(ranks_seen, [f"{rank:g}" for rank in ranks_seen])
    ax.minorticks_off()
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel(f"{_label(primary)} (mean; bars: 95% t-CI, n ≥ 3)")
    ax.set_title(f"{_label(primary)} vs LoRA rank")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
