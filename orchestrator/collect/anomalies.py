"""Runs whose numbers should not be trusted as they stand, each with the reason.

Kinds: ``collapse`` (F1 or accuracy below a share of the baseline's mean, the
share from the run's ``train.health.min_f1_ratio_to_baseline``; with no baseline,
HasAns F1 under ``train.health.min_hasans_f1``; whatever the baseline, a classifier's
accuracy at chance), ``nan_loss`` (a NaN or infinite
loss in metrics.jsonl or result.json), ``short_run`` (fewer than ``SHORT_RUN_RATIO``
of the planned steps), ``warnings`` (result.json warnings, or healthy false),
``stale`` (the matrix now has another config under this run name) and
``not_in_matrix`` (the run id is not among the manifest's current runs).

The rules and thresholds are the contract's health policy (jobs/contract/health.py), the one the
worker applies to its own result too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from jobs.contract.health import (
    DEFAULT_COLLAPSE_RATIO,
    DEFAULT_HASANS_FLOOR,
    at_chance,
    collapsed,
    short_run,
    under_hasans_floor,
)
from orchestrator.collect.frame import records
from orchestrator.collect.report import COMPLETED

# Kinds that make a configuration unfit for a recipe.
DISQUALIFYING = frozenset({"collapse", "nan_loss", "short_run", "warnings"})
LABELS = {"collapse": "collapse", "nan_loss": "NaN loss", "short_run": "short run", "warnings": "warnings",
          "stale": "stale", "not_in_matrix": "not in matrix"}
_COLUMNS = frozenset({"run_id", "run_name", "config_id", "status", "stale", "in_matrix", "current",
                      "metrics.HasAns_f1", "log.nonfinite_losses", "log.nonfinite_result_loss",
                      "train_result.steps", "train_result.planned_steps", "warnings", "healthy",
                      "eval.num_classes", "early_stopping.stopped_early"})


@dataclass(frozen=True)
class Anomaly:
    """One suspicious run."""

    kind: str
    run_id: str
    config_id: str
    message: str

    def text(self) -> str:
        """The line shown in summaries: ``run_id: message``."""
        return f"{self.run_id}: {self.message}"


def find_anomalies(
    runs: pd.DataFrame, primary: str | None, baseline_means: Mapping[str, float], baseline_ids: Mapping[str, str | None],
    judged_means: Mapping[str, Mapping[str, float]] | None = None,
) -> list[Anomaly]:
    """Every anomaly of ``runs``; ``baseline_means``/``baseline_ids`` by config_id give
    each config's baseline primary-metric mean and the baseline's config id; ``judged_means``:
    the same for each metric the health policy judges (jobs.tasks.judged_metrics; default the
    primary alone). The checks are vectorised; only flagged rows are looked at one by one."""
    judged = dict(judged_means) if judged_means is not None else ({primary: baseline_means} if primary else {})
    found: list[Anomaly] = []
    if runs.empty:
        return found
    checked = runs["current"].astype(bool) & (runs["status"] == COMPLETED)
    suspects = runs["stale"].astype(bool) | ~runs["in_matrix"].astype(bool) | (checked & _suspicious(runs, judged))
    wanted = [column for column in runs.columns if column in _COLUMNS or column.startswith("train.health.")]
    wanted += [f"metrics.{metric}" for metric in judged if f"metrics.{metric}" in runs.columns]
    wanted += ["metrics.accuracy"] if "metrics.accuracy" in runs.columns else []
    # each once: a judged metric may be one the checks always read (SQuAD v2's HasAns F1)
    for row in records(runs.loc[suspects], list(dict.fromkeys(wanted))):
        found += _matrix_anomalies(row)
        if not row.get("current") or row.get("status") != COMPLETED:
            continue
        config_id = str(row["config_id"])
        found += _collapse(row, {metric: means.get(config_id) for metric, means in judged.items()},
                           baseline_ids.get(config_id))
        found += _health(row)
    return found


def _suspicious(runs: pd.DataFrame, judged: Mapping[str, Mapping[str, float]]) -> pd.Series:
    """A cheap superset of the rows with a health anomaly (the exact checks follow)."""
    def number(column: str) -> pd.Series:
        if column not in runs:
            return pd.Series(np.nan, index=runs.index)
        return pd.to_numeric(runs[column], errors="coerce")

    mask = (number("log.nonfinite_losses") > 0) | (runs.get("log.nonfinite_result_loss", False) == True)
    mask |= short_run(number("train_result.steps"), number("train_result.planned_steps"))
    mask |= (runs["warnings"].fillna("") != "") if "warnings" in runs else False
    mask |= (runs["healthy"] == False) if "healthy" in runs else False
    ratio = number("train.health.min_f1_ratio_to_baseline").fillna(DEFAULT_COLLAPSE_RATIO)
    no_reference = pd.Series(True, index=runs.index)
    for metric, means in judged.items():
        reference = pd.to_numeric(runs["config_id"].map(means), errors="coerce")
        mask |= collapsed(number(f"metrics.{metric}"), reference, ratio)
        no_reference &= reference.isna()
    floor = number("train.health.min_hasans_f1").fillna(DEFAULT_HASANS_FLOOR)
    mask |= no_reference & under_hasans_floor(number("metrics.HasAns_f1"), floor)
    mask |= at_chance(number("metrics.accuracy"), number("eval.num_classes"))  # classifiers only: NaN otherwise
    return mask.fillna(False).astype(bool)


def flags_by_config(anomalies: list[Anomaly]) -> dict[str, list[str]]:
    """config_id -> sorted anomaly kinds of its current runs (stale ones left out)."""
    kinds: dict[str, set[str]] = {}
    for anomaly in anomalies:
        if anomaly.kind not in ("stale", "not_in_matrix"):
            kinds.setdefault(anomaly.config_id, set()).add(anomaly.kind)
    return {config_id: sorted(values) for config_id, values in kinds.items()}


def _matrix_anomalies(row: Mapping[str, Any]) -> list[Anomaly]:
    run_id, config_id, status = str(row["run_id"]), str(row["config_id"]), row.get("status")
    if row.get("stale"):
        return [Anomaly("stale", run_id, config_id,
                        f"stale ({status}): {row.get('run_name')} now has another config; left out of the tables")]
    if not row.get("in_matrix", True):
        return [Anomaly("not_in_matrix", run_id, config_id,
                        f"not in the matrix any more ({status}); left out of the tables")]
    return []


def _collapse(row: Mapping[str, Any], baseline_means: Mapping[str, float | None],
              baseline_id: str | None) -> list[Anomaly]:
    """One collapse anomaly at most: a classifier's accuracy at chance, else the first judged metric under its
    ratio of the baseline's mean, else (no baseline) HasAns F1 under its floor."""
    accuracy = _number(row.get("metrics.accuracy"))
    classes = _number(row.get("eval.num_classes"))
    if np.isfinite(accuracy) and np.isfinite(classes) and classes >= 2 and at_chance(accuracy, classes):
        return [Anomaly("collapse", str(row["run_id"]), str(row["config_id"]),
                        f"accuracy {accuracy:.2f} is at chance level ({100.0 / classes:.1f} for {int(classes)} classes; "
                        "collapse whatever the baseline)")]
    ratio = _number(row.get("train.health.min_f1_ratio_to_baseline"), DEFAULT_COLLAPSE_RATIO)
    compared = False
    for metric, baseline_mean in baseline_means.items():
        value = _number(row.get(f"metrics.{metric}"))
        if baseline_mean is None or not np.isfinite(baseline_mean) or not np.isfinite(value):
            continue
        compared = True
        if collapsed(value, baseline_mean, ratio):
            share = value / baseline_mean if baseline_mean else float("nan")
            label = {"f1": "F1", "HasAns_f1": "HasAns F1"}.get(metric, metric)
            return [Anomaly("collapse", str(row["run_id"]), str(row["config_id"]),
                            f"{label} {value:.2f} is {share:.0%} of baseline {baseline_id}'s {baseline_mean:.2f} "
                            f"(collapse: under {ratio:.0%})")]
    if compared:
        return []
    hasans = _number(row.get("metrics.HasAns_f1"))
    floor = _number(row.get("train.health.min_hasans_f1"), DEFAULT_HASANS_FLOOR)
    if np.isfinite(hasans) and under_hasans_floor(hasans, floor):
        return [Anomaly("collapse", str(row["run_id"]), str(row["config_id"]),
                        f"HasAns F1 {hasans:.2f} under the floor {floor:g} (collapse; no baseline)")]
    return []


def _health(row: Mapping[str, Any]) -> list[Anomaly]:
    run_id, config_id = str(row["run_id"]), str(row["config_id"])
    found = []
    nonfinite = _number(row.get("log.nonfinite_losses"), 0.0)
    if nonfinite > 0 or row.get("log.nonfinite_result_loss") is True:
        where = f"{int(nonfinite)} logged loss(es)" if nonfinite > 0 else "result.json train loss"
        found.append(Anomaly("nan_loss", run_id, config_id, f"NaN/inf loss ({where})"))
    steps, planned = _number(row.get("train_result.steps")), _number(row.get("train_result.planned_steps"))
    stopped = row.get("early_stopping.stopped_early")  # by design, not a run cut short (numpy's bool in a frame)
    stopped_early = isinstance(stopped, (bool, np.bool_)) and bool(stopped)
    if (np.isfinite(steps) and np.isfinite(planned) and planned > 0 and short_run(steps, planned)
            and not stopped_early):
        found.append(Anomaly("short_run", run_id, config_id,
                             f"finished after {int(steps)} of {int(planned)} planned steps ({steps / planned:.0%})"))
    warnings = row.get("warnings")
    if (isinstance(warnings, str) and warnings) or row.get("healthy") is False:
        found.append(Anomaly("warnings", run_id, config_id, f"unhealthy: {warnings or 'healthy is false'}"))
    return found


def _number(value: Any, default: float = float("nan")) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return default
    number = float(value)
    return default if np.isnan(number) and not np.isnan(default) else number
