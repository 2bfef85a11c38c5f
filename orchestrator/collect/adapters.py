"""The adapter_ranks table: LoRA update ranks per configuration, module kind and layer.

Reads ``adapter_analysis.json`` (written by ``jobs.adapter_analysis``) of the current,
finished runs and averages over seeds: stable rank, effective rank and the spectral and
Frobenius norms of ``delta W`` (means and sample standard deviations; a zero update has
no rank and is left out of the rank's mean, ``n_ranked`` says how many counted).
Their relation to a transfer gain is orchestrator/collect/transfer.py's table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.contract import ADAPTER_ANALYSIS_FILE
from orchestrator.collect.render import Table, fmt_mean_std, fmt_number
from orchestrator.collect.report import COMPLETED

NAME = "adapter_ranks"
FIGURES = ("stable_rank", "effective_rank", "spectral_norm", "frobenius_norm")
KEYS = ["config_id", "module", "layer", "r"]


def adapter_tables(runs: pd.DataFrame, experiment_dir: Path, problems: list[str]) -> list[Table]:
    """``[adapter_ranks]`` when a current finished run has an adapter analysis, else ``[]``.

    ``runs``: collect's runs table (``run_dir`` relative to ``experiment_dir`` or absolute).
    An unreadable file adds a line to ``problems``; a missing one is no problem here (a
    failed analysis is already among the run's result warnings, which collect shows)."""
    finished = _finished(runs)
    if finished.empty:
        return []
    rows = [row for run_dir, config_id in zip(finished["run_dir"].astype(str), finished["config_id"])
            for row in _module_rows(run_dir, config_id, experiment_dir, problems)]
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    frame["layer"] = frame["layer"].astype("Int64")
    grouped = frame.groupby(KEYS, dropna=False, sort=False)
    data = grouped.size().rename("n").to_frame()
    for figure in FIGURES:
        values = pd.to_numeric(frame[figure], errors="coerce")
        by = values.groupby([frame[key] for key in KEYS], dropna=False, sort=False)
        data[f"{figure}_mean"], data[f"{figure}_std"] = by.mean(), by.std(ddof=1)
        if figure.endswith("_rank"):
            data[f"{figure}_n_ranked"] = by.count()
    data = data.reset_index().rename(columns={"config_id": "id"})
    data = data.sort_values(["id", "layer", "module"], kind="stable", na_position="last").reset_index(drop=True)
    display = pd.DataFrame({
        "ID": data["id"], "module": data["module"],
        "layer": ["–" if pd.isna(layer) else str(layer) for layer in data["layer"]], "r": data["r"],
        "runs": data["n"],
        **{label: [fmt_mean_std(m, s) for m, s in zip(data[f"{figure}_mean"], data[f"{figure}_std"])]
           for label, figure in (("stable rank", "stable_rank"), ("effective rank", "effective_rank"))},
        "‖ΔW‖₂": [fmt_number(value, 4) for value in data["spectral_norm_mean"]],
        "‖ΔW‖_F": [fmt_number(value, 4) for value in data["frobenius_norm_mean"]],
    })
    note = ("Per LoRA-wrapped module: stable rank ||dW||_F^2/||dW||_2^2 and effective rank (Roy & Vetterli 2007) of "
            "the update delta W = scaling * B A, mean ± std over seeds (current finished runs); norms are means.")
    return [Table(NAME, "LoRA update ranks per module and layer", data, display, note)]


def _finished(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty or "run_dir" not in runs.columns:
        return runs.iloc[0:0]
    return runs[runs["current"].astype(bool) & (runs["status"] == COMPLETED)]


def _module_rows(run_dir: str, config_id: str, experiment_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    """One row a module of the run's adapter_analysis.json; none (maybe a problem) without one.
    ``run_dir``: relative to ``experiment_dir`` or absolute (strings: this runs for every finished run)."""
    path = os.path.join(experiment_dir, run_dir, ADAPTER_ANALYSIS_FILE)
    if not os.path.isfile(path):  # not LoRA, older than the analysis, or it failed (then result.json warns)
        return []
    try:
        with open(path, encoding="utf-8") as handle:
            modules = json.load(handle)["modules"]
        return [{"config_id": config_id, "module": entry["module"], "layer": entry["layer"], "r": entry["r"],
                 **{figure: entry[figure] for figure in FIGURES}} for entry in modules]
    except (OSError, ValueError, KeyError, TypeError) as error:
        problems.append(f"{run_dir}: {ADAPTER_ANALYSIS_FILE} unreadable ({type(error).__name__}: {error}); "
                        "left out of the adapter_ranks table")
        return []
