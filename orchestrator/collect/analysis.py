"""From the runs table to one row a configuration: seed statistics, baseline deltas,
Pareto membership (anomalous configurations left out), anomaly flags and caveats on
speed. Tables, plots, the comparison and recipes all read this."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jobs.tasks import TASKS, judged_metrics, metric_labels, primary_metrics
from orchestrator.collect.anomalies import DISQUALIFYING, LABELS, Anomaly, find_anomalies, flags_by_config
from orchestrator.collect.caveats import speed_caveats
from orchestrator.collect.describe import data_words, describe, method
from orchestrator.collect.frame import natural_key_text, records
from orchestrator.collect.manifest import Manifest
from orchestrator.collect.report import COMPLETED
from orchestrator.collect.stats import aggregate, pareto_front

# Inference latency (result.json latency_ms, jobs/latency.py): short name -> runs column.
LATENCY_METRICS = {f"latency_{size}_{stat}_ms": f"latency_ms.batch_{size}.{stat}"
                   for size in ("1", "N") for stat in ("p50", "p95")}
# Aggregated per configuration: short name -> runs column. The tasks' metrics come from the tasks registry.
TASK_METRICS = tuple(metric_labels())
METRICS = {
    **{metric: f"metrics.{metric}" for metric in TASK_METRICS},
    "hasans_f1": "metrics.HasAns_f1", "noans_f1": "metrics.NoAns_f1",
    "eval_runtime_s": "eval.runtime_s", "eval_samples_per_s": "eval.samples_per_s",
    "train_loss": "train_result.loss", "train_runtime_s": "train_result.runtime_s",
    "train_samples_per_s": "train_result.samples_per_s", "train_tokens_per_s": "train_result.tokens_per_s",
    "trainable_params": "params.trainable", "total_params": "params.total",
    "peak_allocated_mib": "memory.peak_allocated_mib", "peak_reserved_mib": "memory.peak_reserved_mib",
    "step_peak_allocated_mib": "memory.step_peak_allocated_mib",
    "step_peak_reserved_mib": "memory.step_peak_reserved_mib", "device_total_mib": "memory.device_total_mib",
    **LATENCY_METRICS,
    "best_step": "curve.best_step", "best_epoch": "curve.best_epoch",  # the best evaluation during training
    "train_examples": "data.train_examples",  # rows trained on (result.json data; the x of a "full" scaling point)
}
CI_METRICS = (*TASK_METRICS, "train_samples_per_s")
BOOTSTRAP_METRICS = TASK_METRICS  # the per-configuration percentile-bootstrap CI of the mean
_FLOAT_KNOBS = ("learning_rate", "alpha", "dropout", "epochs", "warmup", "weight_decay", "null_score_threshold",
                "min_f1_ratio_to_baseline", "min_hasans_f1")
FIRST_VALUE_COLUMNS = ("series", "base_name", "description", "memory.device_name", "latency_ms.batch_size",
                       "latency_ms.device",
                       "train.optimizer", "train.gradient_checkpointing", "train.precision", "train.compile.enabled",
                       "train.compile.backend", "train.lora.r", "train.quantization.bits")


@dataclass
class Analysis:
    """Everything the outputs are made of."""

    runs: pd.DataFrame
    configs: pd.DataFrame
    primary: str | None
    baseline: str | None  # the experiment's baseline config id (recipes, titles)
    anomalies: list[Anomaly] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def primary_metric(runs: pd.DataFrame) -> str | None:
    """The primary metric its task declares (jobs.tasks: "f1" for squad_v2, "accuracy" for sst2) of
    the runs' tasks, the first in registry order with values; None when none has values."""
    present = set(runs["train.task"].dropna()) if "train.task" in runs.columns else set()
    names = [task.primary_metric for task in TASKS.values() if task.name in present] or list(primary_metrics())
    for name in dict.fromkeys(names):
        column = f"metrics.{name}"
        if column in runs.columns and pd.to_numeric(runs[column], errors="coerce").notna().any():
            return name
    return None


def analyse(runs: pd.DataFrame, manifest: Manifest | None) -> Analysis:
    """Aggregate the current runs by configuration and attach baselines, deltas, flags."""
    primary = primary_metric(runs) if not runs.empty else None
    if runs.empty:
        return Analysis(runs=runs, configs=pd.DataFrame(), primary=primary, baseline=None)
    current = runs[runs["current"]]
    finished = current[current["status"] == COMPLETED]
    configs = _config_rows(current)
    stats = aggregate(finished, "config_id", METRICS, CI_METRICS, BOOTSTRAP_METRICS)
    configs = configs.join(stats, how="left")
    configs["n"] = finished.groupby("config_id").size().reindex(configs.index).fillna(0).astype(int)
    problems: list[str] = []
    baseline_ids = _baselines(runs, configs, manifest, problems)
    configs["baseline_id"] = pd.Series(baseline_ids, dtype=object).reindex(configs.index)
    _deltas(configs, primary)
    if primary is not None:
        configs[f"{primary}_boot_ci_overlaps_baseline"] = ci_overlaps_baseline(configs, primary)
    metric_column = f"{primary}_mean" if primary else None
    means = configs[metric_column] if metric_column in configs else pd.Series(dtype=float)
    baseline_means = {cid: float(means.get(bid, np.nan)) for cid, bid in baseline_ids.items() if bid}
    judged_means = {primary: baseline_means} if primary else {}
    for metric in judged_metrics(primary):  # the health policy's other judged metrics (SQuAD v2: HasAns F1)
        column = f"metrics.{metric}"
        if metric != primary and column in finished:
            by_config = pd.to_numeric(finished[column], errors="coerce").groupby(finished["config_id"]).mean()
            judged_means[metric] = {cid: float(by_config.get(bid, np.nan)) for cid, bid in baseline_ids.items() if bid}
    anomalies = find_anomalies(runs, primary, baseline_means, baseline_ids, judged_means)
    flags = flags_by_config(anomalies)
    configs["flags"] = [", ".join(flags.get(cid, [])) for cid in configs.index]
    configs["flag_labels"] = [", ".join(LABELS[kind] for kind in flags.get(cid, [])) for cid in configs.index]
    if metric_column in configs and "train_samples_per_s_mean" in configs:
        # an anomalous configuration is no trade-off anyone should pick (as in the recipes):
        # it is left out of the front, and cannot push a healthy one off it
        trusted = [not set(flags.get(cid, ())) & DISQUALIFYING for cid in configs.index]
        configs["pareto"] = pareto_front(configs["train_samples_per_s_mean"].where(trusted),
                                         configs[metric_column].where(trusted))
    configs["speed_caveat"] = speed_caveats(finished, configs)
    runs = runs.copy()
    by_run: dict[str, list[str]] = {}
    for anomaly in anomalies:
        by_run.setdefault(anomaly.run_id, []).append(anomaly.kind)
    runs["anomalies"] = [", ".join(by_run.get(rid, ())) for rid in runs["run_id"]]
    return Analysis(runs=runs, configs=configs, primary=primary, baseline=_common_baseline(configs),
                    anomalies=anomalies, problems=problems)


def _config_rows(current: pd.DataFrame) -> pd.DataFrame:
    """Descriptive columns a configuration, from its first run (seeds differ in the seed only)."""
    rank = pd.DataFrame({"unfinished": current["status"] != COMPLETED,
                         "seed": pd.to_numeric(current["seed"], errors="coerce")}, index=current.index)
    ordered = current.loc[rank.sort_values(["unfinished", "seed"], kind="stable").index]
    grouped = ordered.groupby("config_id", sort=False)
    first = ordered.drop_duplicates("config_id").set_index("config_id")
    configs = first[[name for name in FIRST_VALUE_COLUMNS if name in first.columns]].copy()
    knobs = [knobs_of(row) for row in records(first, [c for c in first.columns if c.startswith("train.")])]
    configs["config_words"] = [describe(train) for train in knobs]
    configs["method"] = [method(train) for train in knobs]
    configs["noise"] = [data_words(train)[0] for train in knobs]
    configs["max_train_samples"] = [data_words(train)[1] for train in knobs]
    configs["n_runs"] = grouped.size()
    done = ordered[ordered["status"] == COMPLETED].groupby("config_id", sort=False)
    configs["run_ids"] = done["run_id"].agg(list).reindex(configs.index)
    configs["run_dirs"] = grouped["run_dir"].agg(list)
    if "owner" in ordered:
        configs["owners"] = grouped["owner"].agg(lambda names: ", ".join(sorted(set(map(str, names)))))
    configs["run_ids"] = [value if isinstance(value, list) else [] for value in configs["run_ids"]]
    configs["adapted"] = _adapted_runs(ordered).reindex(configs.index).fillna("")
    series = configs["series"].to_dict()
    keys = sorted(configs.index, key=lambda cid: (natural_key_text(series[cid]), natural_key_text(cid)))
    return configs.loc[keys]


def _adapted_runs(runs: pd.DataFrame) -> pd.Series:
    """config_id -> the finished runs that trained with a micro-batching adapted after a CUDA OOM, e.g.
    ``A1-seed1 (8x1 -> 4x2)``; ``+ckpt`` marks gradient checkpointing turned on."""
    if "adapted.adaptations" not in runs:
        return pd.Series(dtype=object)
    adapted = runs[(runs["status"] == COMPLETED) & runs["adapted.adaptations"].notna()]

    def label(row: pd.Series) -> str:
        def batching(side: str) -> str:
            ckpt = "+ckpt" if row.get(f"adapted.{side}.gradient_checkpointing") is True else ""
            return (f"{int(row[f'adapted.{side}.batch_size'])}x"
                    f"{int(row[f'adapted.{side}.gradient_accumulation_steps'])}{ckpt}")
        return f"{row['run_name']} ({batching('from')} -> {batching('to')})"

    labels = adapted.apply(label, axis=1) if not adapted.empty else pd.Series(dtype=object)
    return labels.groupby(adapted["config_id"], sort=False).agg(", ".join) if not adapted.empty else labels


def knobs_of(row: dict[str, Any]) -> dict[str, Any]:
    """The nested ``train`` knobs back from a row's flat ``train.*`` columns (missing
    values left out; whole floats, which pandas makes of ints beside NaN, made ints)."""
    train: dict[str, Any] = {}
    for column, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, float) and value.is_integer() and not column.endswith(_FLOAT_KNOBS):
            value = int(value)
        *parents, leaf = column.split(".")[1:]
        node = train
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return train


def _baselines(runs: pd.DataFrame, configs: pd.DataFrame, manifest: Manifest | None,
               problems: list[str]) -> dict[str, str | None]:
    """config_id -> its baseline's config_id: the manifest's baseline base name when set
    (matching grid values where the baseline has a grid too), else the spec's baseline_run_id."""
    if manifest is not None and manifest.baseline:
        base_names = configs["base_name"].to_dict()
        candidates = [cid for cid in configs.index if base_names[cid] == manifest.baseline]
        if not candidates:
            problems.append(f"baseline {manifest.baseline} (manifest.json) has no current runs")
            return {cid: None for cid in configs.index}
        by_suffix = {cid[len(manifest.baseline):]: cid for cid in candidates}
        return {cid: by_suffix.get(cid[len(str(base_names[cid])):], candidates[0])
                for cid in configs.index}
    config_of_run = dict(zip(runs["run_id"], runs["config_id"]))
    firsts = runs[runs["current"]].groupby("config_id")["baseline_run_id"].first()
    resolved: dict[str, str | None] = {}
    for cid in configs.index:
        run_id = firsts.get(cid)
        resolved[cid] = config_of_run.get(run_id) if isinstance(run_id, str) else None
        if isinstance(run_id, str) and run_id not in config_of_run:
            problems.append(f"{cid}: baseline run {run_id} has no run directory")
    return resolved


def _deltas(configs: pd.DataFrame, primary: str | None) -> None:
    """speedup = train samples/s / baseline's; <primary>_delta = mean - baseline mean."""
    for name, column, kind in (("speedup", "train_samples_per_s_mean", "ratio"),
                               (f"{primary}_delta", f"{primary}_mean", "diff")):
        if column not in configs:
            continue
        means = configs[column].to_dict()
        reference = pd.to_numeric(configs["baseline_id"].map(means), errors="coerce")
        if kind == "ratio":
            configs[name] = configs[column] / reference.where(reference != 0)
        else:
            configs[name] = configs[column] - reference


def ci_overlaps_baseline(configs: pd.DataFrame, metric: str) -> pd.Series:
    """Per configuration: does its bootstrap CI of ``metric``'s mean overlap its baseline's?
    True / False; None for the baseline itself, without a baseline, or where either CI is
    NaN (fewer than 3 seeds). A descriptive column: the comparison table tests the difference."""
    low, high = f"{metric}_boot_ci_low", f"{metric}_boot_ci_high"
    if low not in configs or high not in configs:
        return pd.Series(None, index=configs.index, dtype=object)
    out: list[bool | None] = []
    bounds = dict(zip(configs.index, zip(configs[low].tolist(), configs[high].tolist())))
    for config_id, baseline in zip(configs.index, configs["baseline_id"]):
        if not isinstance(baseline, str) or baseline == config_id or baseline not in bounds:
            out.append(None)
            continue
        own, base = bounds[config_id], bounds[baseline]
        if not all(np.isfinite(value) for value in (*own, *base)):
            out.append(None)
        else:
            out.append(bool(own[0] <= base[1] and base[0] <= own[1]))
    return pd.Series(out, index=configs.index, dtype=object)


def _common_baseline(configs: pd.DataFrame) -> str | None:
    counts = configs["baseline_id"].dropna().value_counts()
    return str(counts.index[0]) if not counts.empty else None
