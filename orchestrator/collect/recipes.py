"""Practical recipes read off the data, each with its numbers and the runs behind it.

Candidates are configurations with at least one completed run and no disqualifying
anomaly (collapse, NaN loss, short run, warnings). "Memory" is the run's peak
reserved VRAM (what must fit on the card), or peak allocated where reserved is
missing. F1 tolerances are in points (accuracy reported as a 0-1 fraction gets
them divided by 100). The reference is the experiment's baseline; with none, the
best candidate's metric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.collect.analysis import Analysis
from orchestrator.collect.anomalies import DISQUALIFYING
from orchestrator.collect.render import Table, fmt_delta, fmt_number, fmt_ratio

WITHIN_FAST_POINTS = 0.5
WITHIN_LEAN_POINTS = 2.0
LIMIT_8GB_MIB = 8 * 1024.0
LIMIT_T4_MIB = 15 * 1024.0


@dataclass(frozen=True)
class Recipe:
    """One recipe: what it asks and the configuration that answers it (None: nothing does)."""

    key: str
    question: str
    config_id: str | None = None
    run_ids: tuple[str, ...] = ()
    metric: float = float("nan")
    delta: float = float("nan")
    samples_per_s: float = float("nan")
    speedup: float = float("nan")
    memory_mib: float = float("nan")


def candidates(configs: pd.DataFrame) -> pd.DataFrame:
    """Configurations a recipe may recommend."""
    if configs.empty:
        return configs
    flags = configs["flags"].fillna("").map(lambda text: set(filter(None, text.split(", "))))
    ok = (configs["n"] > 0) & ~flags.map(lambda kinds: bool(kinds & DISQUALIFYING))
    out = configs[ok].copy()
    reserved = pd.Series(out.get("peak_reserved_mib_mean", np.nan), index=out.index, dtype=float)
    allocated = pd.Series(out.get("peak_allocated_mib_mean", np.nan), index=out.index, dtype=float)
    out["memory_mib"] = reserved.fillna(allocated)
    return out


def find_recipes(analysis: Analysis, gpu_memory_mib: float | None = None) -> tuple[list[Recipe], str]:
    """The recipes, and a sentence naming the reference they were measured against."""
    primary = analysis.primary
    pool = candidates(analysis.configs)
    if primary is None or pool.empty or f"{primary}_mean" not in pool:
        return [], "No completed runs with a metric yet."
    metric = pool[f"{primary}_mean"]
    scale = 0.01 if primary == "accuracy" and metric.max() <= 1.0 else 1.0
    reference, reference_text = _reference(analysis, metric)
    label = "F1" if primary == "f1" else primary
    near = pool[metric >= reference - WITHIN_FAST_POINTS * scale]
    lean = pool[metric >= reference - WITHIN_LEAN_POINTS * scale]
    recipes = [
        _pick("fastest", f"Fastest within {WITHIN_FAST_POINTS:g} {label} of {reference_text}", near,
              "train_samples_per_s_mean", True, primary),
        _best_under("best_under_8gb", f"Best {label} under 8 GB", pool, LIMIT_8GB_MIB, primary),
        _best_under("best_under_t4", f"Best {label} under 15 GB (T4)", pool, LIMIT_T4_MIB, primary),
    ]
    if gpu_memory_mib:
        recipes.append(_best_under("best_on_gpu", f"Best {label} within the GPU's {gpu_memory_mib:,.0f} MiB",
                                   pool, float(gpu_memory_mib), primary))
    recipes.append(_pick("leanest", f"Lowest memory within {WITHIN_LEAN_POINTS:g} {label} of {reference_text}",
                         lean, "memory_mib", False, primary))
    return recipes, f"Reference: {reference_text} ({label} {reference:.2f})."


def _reference(analysis: Analysis, metric: pd.Series) -> tuple[float, str]:
    configs = analysis.configs
    column = f"{analysis.primary}_mean"
    if analysis.baseline is not None and analysis.baseline in configs.index:
        value = configs.at[analysis.baseline, column]
        if np.isfinite(value):
            return float(value), f"the baseline {analysis.baseline}"
    best = metric.idxmax()
    return float(metric.max()), f"the best configuration {best} (no baseline)"


def _best_under(key: str, question: str, pool: pd.DataFrame, limit_mib: float, primary: str) -> Recipe:
    fits = pool[pool["memory_mib"] <= limit_mib]
    return _pick(key, question, fits, f"{primary}_mean", True, primary)


def _pick(key: str, question: str, pool: pd.DataFrame, column: str, highest: bool, primary: str) -> Recipe:
    values = pd.to_numeric(pool[column], errors="coerce").dropna() if column in pool else pd.Series(dtype=float)
    if values.empty:
        return Recipe(key=key, question=question)
    # ties: the first configuration in table order wins
    best = values.idxmax() if highest else values.idxmin()
    row = pool.loc[best]
    get: Callable[[str], float] = lambda name: float(row[name]) if name in row and pd.notna(row[name]) else np.nan
    return Recipe(key=key, question=question, config_id=str(best), run_ids=tuple(row["run_ids"]),
                  metric=get(f"{primary}_mean"), delta=get(f"{primary}_delta"),
                  samples_per_s=get("train_samples_per_s_mean"), speedup=get("speedup"), memory_mib=get("memory_mib"))


def recipes_table(recipes: list[Recipe], primary: str | None) -> Table:
    """The recipes as a canonical table (CSV for machines, Markdown/LaTeX for people)."""
    label = "F1" if primary == "f1" else (primary or "metric")
    data = pd.DataFrame({
        "recipe": [r.key for r in recipes], "question": [r.question for r in recipes],
        "id": [r.config_id for r in recipes], "run_ids": [";".join(r.run_ids) for r in recipes],
        f"{primary}_mean": [r.metric for r in recipes], f"{primary}_delta": [r.delta for r in recipes],
        "train_samples_per_s_mean": [r.samples_per_s for r in recipes], "speedup": [r.speedup for r in recipes],
        "memory_mib": [r.memory_mib for r in recipes],
    })
    display = pd.DataFrame({
        "recipe": data["question"], "ID": data["id"].fillna("none qualifies"),
        label: [fmt_number(r.metric) for r in recipes], f"Δ{label}": [fmt_delta(r.delta) for r in recipes],
        "train samples/s": [fmt_number(r.samples_per_s) for r in recipes],
        "speed-up": [fmt_ratio(r.speedup) for r in recipes],
        "peak VRAM (MiB)": [fmt_number(r.memory_mib, 0) for r in recipes],
        "run": [(r.run_ids[0] + (f" (+{len(r.run_ids) - 1})" if len(r.run_ids) > 1 else "")) if r.run_ids else "–"
                for r in recipes],
    })
    return Table("recipes", "Recipes", data, display)


def recipes_markdown(recipes: list[Recipe], reference_text: str, primary: str | None, experiment: str) -> str:
    """recipes.md: one paragraph a recipe with its numbers and runs."""
    label = "F1" if primary == "f1" else (primary or "metric")
    lines = [f"# Recipes: {experiment}", "", reference_text,
             ("Candidates: configurations with a completed run and no collapse, NaN loss, short run or warnings; "
              "memory is the peak reserved VRAM over the run."), ""]
    for recipe in recipes:
        lines.append(f"## {recipe.question}")
        lines.append("")
        if recipe.config_id is None:
            lines += ["No configuration qualifies.", ""]
            continue
        lines.append(
            f"**{recipe.config_id}**: {label} {fmt_number(recipe.metric)} ({fmt_delta(recipe.delta)} vs baseline), "
            f"{fmt_number(recipe.samples_per_s)} train samples/s ({fmt_ratio(recipe.speedup)}), "
            f"peak VRAM {fmt_number(recipe.memory_mib, 0)} MiB."
        )
        lines += ["", "Runs: " + ", ".join(f"`{run_id}`" for run_id in recipe.run_ids), ""]
    return "\n".join(lines)
