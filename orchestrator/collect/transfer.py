"""Transfer gain: a run started from another (``init_from``) against the same task trained from scratch,
and its relation to the source adapter's ranks (README, "Runs built on runs").

The from-scratch baseline of a dependent configuration is the configuration of the SAME task with no
``init_from`` whose runs have the same value of every non-seed grid axis the two share (e.g.
``lora.placement``): exactly one such configuration, else the gain is null and a problem says why.
Gain = the dependent configuration's mean primary metric minus its baseline's (current finished runs).

Per dependent run, the source run's ``adapter_analysis.json`` gives the mean stable and effective rank
over its LoRA modules; with the run's own gain (its metric minus its baseline's mean) they make the
points of a Spearman rank correlation (n, rho, a 95% interval by Fisher's z with Bonett & Wright's
standard error for Spearman, sqrt((1 + rho^2 / 2) / (n - 3))). Fewer than 3 points, or a constant
variable, give NaN and the reason; the interval needs n >= 4. A correlation, not a cause.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.contract import ADAPTER_ANALYSIS_FILE
from jobs.tasks import TASKS
from orchestrator.collect.curves import EvalCurves, seed_band
from orchestrator.collect.render import Table, fmt_delta, fmt_mean_std, fmt_number
from orchestrator.collect.report import COMPLETED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GAIN = "transfer_gain"
RANKS = "transfer_rank_gain"
RANK_FIGURES = ("stable_rank", "effective_rank")
MIN_POINTS = 3
MAX_CURVE_PANELS = 6


def transfer_tables(runs: pd.DataFrame, experiment_dir: Path, problems: list[str]) -> list[Table]:
    """``[transfer_gain, transfer_rank_gain]`` when a current finished run has ``init_from``, else ``[]``.

    ``runs``: collect's runs table. The gain is in the primary metric of the dependent's task (MRPC: F1).
    A dependent without a unique baseline, or an unreadable file, adds a line to ``problems``."""
    finished = _finished(runs)
    if finished is None:
        return []
    finished["_metric"] = [_primary_value(run) for _, run in finished.iterrows()]
    dependent = finished["train.init_from.run"].notna()
    scratch = finished[~dependent]
    rows, points = [], []
    for config_id, group in finished[dependent].groupby("config_id", sort=False):
        baseline = _baseline(group.iloc[0], scratch, problems)
        base_values = scratch.loc[scratch["config_id"] == baseline, "_metric"] if baseline else pd.Series(dtype=float)
        base_mean = base_values.mean() if len(base_values) else math.nan
        sources = [_source_of(run, experiment_dir, problems) for _, run in group.iterrows()]
        rows.append({
            "id": config_id, "source": group.iloc[0]["train.init_from.run"],
            "take": group.iloc[0].get("train.init_from.take") or "model",
            "trainable": group.iloc[0].get("train.init_from.trainable") or "all",
            "placement": next((s["placement"] for s in sources if s["placement"]), None),
            "baseline_id": baseline, "metric": _primary_name(group.iloc[0]), "n": int(group["_metric"].notna().sum()),
            "mean": group["_metric"].mean(), "std": group["_metric"].std(ddof=1),
            "baseline_n": int(base_values.notna().sum()), "baseline_mean": base_mean,
            "baseline_std": base_values.std(ddof=1) if len(base_values) else math.nan,
            "gain": group["_metric"].mean() - base_mean,
        })
        points += [{"run_id": run["run_id"], "gain": value - base_mean, **source["ranks"]}
                   for (_, run), source, value in zip(group.iterrows(), sources, group["_metric"])]
    return [_gain_table(pd.DataFrame(rows)), _rank_table(pd.DataFrame(points))]


def _finished(runs: pd.DataFrame) -> pd.DataFrame | None:
    """The current finished runs, when one of them started from a source (init_from); else None."""
    if runs.empty or "train.init_from.run" not in runs or "train.task" not in runs:
        return None
    finished = runs[runs["current"].astype(bool) & (runs["status"] == COMPLETED)].copy()
    return finished if finished["train.init_from.run"].notna().any() else None


def transfer_pairs(runs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(dependent configuration, its from-scratch baseline, the dependent task's primary metric) for each
    dependent configuration with exactly one baseline (the rule of :func:`transfer_tables`, whose problems
    name the others)."""
    finished = _finished(runs)
    if finished is None:
        return []
    dependent = finished["train.init_from.run"].notna()
    pairs = []
    for config_id, group in finished[dependent].groupby("config_id", sort=False):
        baseline = _baseline(group.iloc[0], finished[~dependent], [])
        if baseline is not None:
            pairs.append((str(config_id), baseline, _primary_name(group.iloc[0])))
    return pairs


def transfer_curves_figure(configs: pd.DataFrame, curves: EvalCurves,
                           pairs: list[tuple[str, str, str]]) -> Figure | None:
    """``plots/transfer_vs_scratch``: per dependent configuration, its task's primary metric on the validation
    set during training (the evaluations of metrics.jsonl), the transfer runs against their from-scratch
    baseline, each the mean over seeds with a min-max band. None when no pair has evaluations."""
    panels = []
    for dependent, baseline, metric in pairs:
        bands = {}
        for config_id in (dependent, baseline):
            run_ids = configs.at[config_id, "run_ids"] if config_id in configs.index else []
            runs = [curves[run_id] for run_id in (run_ids if isinstance(run_ids, list) else []) if curves.get(run_id)]
            band = seed_band(runs, "validation", metric)
            if band is not None:
                bands[config_id] = (len(runs), band)
        if len(bands) == 2:
            panels.append((dependent, baseline, metric, bands))
    panels = panels[:MAX_CURVE_PANELS]
    if not panels:
        return None
    from matplotlib.figure import Figure

    columns = min(2, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure = Figure(figsize=(6 * columns, 3.6 * rows + 0.6), dpi=100)
    figure.subplots_adjust(left=0.8 / (6 * columns), right=0.98, hspace=0.5, wspace=0.25,
                           top=1 - 0.8 / (3.6 * rows + 0.6))
    figure.suptitle("validation metric during training: transfer (init_from) vs the same task from scratch\n"
                    "mean over seeds; band: lowest to highest seed", fontsize=9)
    for position, (dependent, baseline, metric, bands) in enumerate(panels, start=1):
        ax = figure.add_subplot(rows, columns, position)
        for colour, (config_id, (seeds, (steps, mean, low, high))) in enumerate(bands.items()):
            role = "transfer" if config_id == dependent else "scratch"
            ax.plot(steps, mean, marker=".", color=f"C{colour}", linewidth=1.2,
                    label=f"{role}: {config_id} ({seeds} seed{'s' if seeds != 1 else ''})")
            if seeds > 1:
                ax.fill_between(steps, low, high, color=f"C{colour}", alpha=0.15, linewidth=0)
        ax.set_title(dependent, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return figure


def _primary_name(run: pd.Series) -> str:
    task = TASKS.get(str(run["train.task"]))
    return task.primary_metric if task is not None else "accuracy"


def _primary_value(run: pd.Series) -> float:
    """The run's own task's primary metric (NaN when unmeasured)."""
    value = pd.to_numeric(pd.Series([run.get(f"metrics.{_primary_name(run)}")]), errors="coerce").iloc[0]
    return float(value)


def _baseline(run: pd.Series, scratch: pd.DataFrame, problems: list[str]) -> str | None:
    """The one from-scratch configuration of ``run``'s task matching its shared non-seed grid values."""
    same_task = scratch[scratch["train.task"] == run["train.task"]]
    axes = [c for c in run.index if c.startswith("grid.") and c.rsplit(".", 1)[-1] != "seed" and pd.notna(run[c])]
    matches: list[str] = []
    for config_id, group in same_task.groupby("config_id", sort=False):
        first = group.iloc[0]
        if all(first.get(axis) == run[axis] for axis in axes if axis in group and pd.notna(first.get(axis))):
            matches.append(str(config_id))
    if len(matches) == 1:
        return matches[0]
    shared = ", ".join(f"{axis[5:]}={run[axis]}" for axis in axes) or "no grid axis"
    problems.append(f"{run['config_id']}: transfer gain unmeasured: {len(matches)} from-scratch configurations of "
                    f"task {run['train.task']} match it ({shared}){': ' + ', '.join(matches) if matches else ''}; "
                    "keep exactly one configuration of that task without init_from per grid point")
    return None


def _source_of(run: pd.Series, experiment_dir: Path, problems: list[str]) -> dict[str, Any]:
    """The dependent's source run (spec.json ``source``): its LoRA placement and mean ranks over modules."""
    ranks: dict[str, float] = {figure: math.nan for figure in RANK_FIGURES}
    try:
        spec = json.loads((experiment_dir / str(run["run_dir"]) / "spec.json").read_text())
        source_dir = experiment_dir / "runs" / str(spec["source"]["run_id"])
        source_spec = json.loads((source_dir / "spec.json").read_text())
        placement = ((source_spec.get("train") or {}).get("lora") or {}).get("placement")
    except (OSError, ValueError, KeyError, TypeError) as error:
        problems.append(f"{run['run_dir']}: its source run is unreadable ({type(error).__name__}: {error}); "
                        "left out of the transfer tables' ranks")
        return {"placement": None, "ranks": ranks}
    path = source_dir / ADAPTER_ANALYSIS_FILE
    if path.is_file():
        try:
            modules = json.loads(path.read_text())["modules"]
            for figure in RANK_FIGURES:
                values = [float(entry[figure]) for entry in modules if entry.get(figure) is not None]
                ranks[figure] = float(np.mean(values)) if values else math.nan
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{source_dir.name}: {ADAPTER_ANALYSIS_FILE} unreadable ({type(error).__name__}: "
                            f"{error}); left out of the transfer_rank_gain table")
    return {"placement": placement, "ranks": ranks}


def spearman(x: pd.Series, y: pd.Series) -> dict[str, Any]:
    """Spearman's rho of the pairs where both are numbers, with n, a 95% interval and a reason when NaN."""
    pairs = pd.DataFrame({"x": pd.to_numeric(x, errors="coerce"), "y": pd.to_numeric(y, errors="coerce")}).dropna()
    n = len(pairs)
    out: dict[str, Any] = {"n": n, "spearman_rho": math.nan, "ci_low": math.nan, "ci_high": math.nan, "reason": ""}
    if n < MIN_POINTS:
        out["reason"] = f"n={n} < {MIN_POINTS} pairs"
    elif pairs["x"].nunique() < 2 or pairs["y"].nunique() < 2:
        out["reason"] = "a variable is constant"
    else:
        from scipy import stats  # only where there are transfer pairs: scipy.stats costs 0.9 s to import

        rho = float(stats.spearmanr(pairs["x"], pairs["y"]).statistic)
        out["spearman_rho"] = rho
        if n < MIN_POINTS + 1 or abs(rho) == 1.0:
            out["reason"] = f"no interval at n={n}" if n < MIN_POINTS + 1 else "no interval at |rho| = 1"
        else:
            half = 1.959964 * math.sqrt((1 + rho * rho / 2) / (n - 3))
            out["ci_low"], out["ci_high"] = math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)
    return out


def _gain_table(data: pd.DataFrame) -> Table:
    display = pd.DataFrame({
        "ID": data["id"], "source": data["source"], "take": data["take"], "trains": data["trainable"],
        "placement": data["placement"].fillna("–"), "baseline": data["baseline_id"].fillna("none"),
        "metric": data["metric"], "transfer": [fmt_mean_std(m, s, 4) for m, s in zip(data["mean"], data["std"])],
        "runs": data["n"],
        "scratch": [fmt_mean_std(m, s, 4) for m, s in zip(data["baseline_mean"], data["baseline_std"])],
        "baseline runs": data["baseline_n"], "gain": [fmt_delta(value, 4) for value in data["gain"]],
    })
    note = ("Transfer gain = mean primary metric (the task's: MRPC F1) of the runs started from a source (init_from) minus that of the same "
            "task's from-scratch configuration at the same grid point (current finished runs, mean ± std over seeds).")
    return Table(GAIN, "Transfer gain against training from scratch", data, display, note)


def _rank_table(points: pd.DataFrame) -> Table:
    rows = [{"figure": figure, **spearman(points[figure], points["gain"])} for figure in RANK_FIGURES]
    data = pd.DataFrame(rows)
    display = pd.DataFrame({
        "source adapter's": data["figure"].str.replace("_", " "), "runs (n)": data["n"],
        "Spearman ρ": [fmt_number(value, 3) for value in data["spearman_rho"]],
        "95% CI": [f"[{fmt_number(low, 3)}, {fmt_number(high, 3)}]" if not math.isnan(low) else "–"
                   for low, high in zip(data["ci_low"], data["ci_high"])],
        "why none": data["reason"].replace("", "–"),
    })
    note = ("Rank correlation, per dependent run, between its source adapter's rank (mean over its LoRA modules, "
            "adapter_analysis.json) and the run's transfer gain; 95% CI by Fisher's z (Bonett & Wright). "
            "An association across runs, not a cause.")
    return Table(RANKS, "Source adapter rank vs transfer gain", data, display, note)
