"""The canonical tables of the seed studies, built from the per-configuration frame.

configurations, accuracy_speed (all, and one a series: accuracy_speed_<series>), comparison,
scaling (metric vs N, orchestrator/collect/scaling.py), peft, memory, vram and failures. Each is a
``render.Table``: CSV columns keep full numbers, the Markdown/LaTeX form shows mean ± std over seeds
and the 95% CIs of the mean (t and bootstrap, n >= 3).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from jobs.tasks import metric_labels
from orchestrator.collect.analysis import LATENCY_METRICS, Analysis
from orchestrator.collect.compare import MIN_SEEDS, Comparison, compare_all
from orchestrator.collect.render import (
    MISSING,
    Table,
    fmt_ci,
    fmt_delta,
    fmt_mean_std,
    fmt_number,
    fmt_params,
    fmt_percent,
    fmt_ratio,
    fmt_runs,
)
from orchestrator.collect.report import CORRUPT, FAILED
from orchestrator.collect.scaling import scaling_points, scaling_table
from orchestrator.collect.stats import MIN_CI_N

ADAPTED_NOTE = (" adapted after OOM: runs that trained with a smaller micro-batch (batch_size x accumulation, same "
                "effective batch; +ckpt: gradient checkpointing) after running out of GPU memory.")
BEST_NOTE = (" best step / epoch: the best validation evaluation during training by early_stopping.metric, else the "
             "primary metric (with early stopping, the checkpoint evaluated and reported).")
METRIC_LABELS = metric_labels()  # every task's tabulated metrics (jobs.tasks), with their column labels


def build_tables(analysis: Analysis) -> list[Table]:
    """Every table that has rows (the configuration table always)."""
    configs = analysis.configs
    tables = [configuration_table(configs)]
    if configs.empty:
        return tables
    done = configs[configs["n"] > 0]
    tables.append(accuracy_speed_table(done, analysis, "accuracy_speed", "Accuracy and speed"))
    for series in sorted(done["series"].dropna().unique(), key=str):
        subset = done[done["series"] == series]
        tables.append(accuracy_speed_table(subset, analysis, f"accuracy_speed_{safe_name(series)}",
                                           f"Accuracy and speed: series {series}"))
    comparisons = compare_all(analysis)
    if comparisons:
        tables.append(comparison_table(comparisons, analysis.primary))
    points = scaling_points(analysis)
    if points is not None and analysis.primary is not None:
        tables.append(scaling_table(points, analysis.primary))
    tables += [peft_table(done, analysis), memory_table(done, analysis), vram_table(done)]
    failures = failure_table(analysis.runs)
    if not failures.data.empty:
        tables.append(failures)
    return tables


def safe_name(text: Any) -> str:
    """A file-name-safe version of a series name."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(text)) or "_"


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(np.nan, index=frame.index, dtype=float)


def _cells(frame: pd.DataFrame, fn: Callable[..., str], *names: str, **kwargs: Any) -> list[str]:
    columns = [_col(frame, name).tolist() for name in names]
    return [fn(*values, **kwargs) for values in zip(*columns)]


def _baseline_label(configs: pd.DataFrame) -> str:
    ids = set(configs["baseline_id"].dropna()) if "baseline_id" in configs else set()
    return f"vs {ids.pop()}" if len(ids) == 1 else "vs baseline"


def configuration_table(configs: pd.DataFrame) -> Table:
    """ID, run directory, key configuration in words (and n, method, flags)."""
    if configs.empty:
        empty = pd.DataFrame(columns=["ID", "run directory", "configuration"])
        return Table("configurations", "Configurations", empty, empty)
    data = pd.DataFrame({
        "id": configs.index, "series": configs["series"].values, "n": configs["n"].values,
        "n_runs": configs["n_runs"].values, "run_dirs": [";".join(paths) for paths in configs["run_dirs"]],
        "configuration": configs["config_words"].values, "method": configs["method"].values,
        "description": _col(configs, "description").fillna("").values, "flags": configs["flags"].values,
        "adapted": _col(configs, "adapted").fillna("").values,
    })
    display = pd.DataFrame({
        "ID": data["id"], "n": data["n"], "run directory": [fmt_runs(paths) for paths in configs["run_dirs"]],
        "configuration": data["configuration"], "flags": configs["flag_labels"].values,
    })
    if data["description"].astype(bool).any():
        display.insert(4, "description", data["description"])
    # The robustness / scaling axes: always in the CSV, shown where a configuration sets them.
    data["noise"] = _col(configs, "noise").fillna("none").values
    data["max_train_samples"] = _col(configs, "max_train_samples").values
    if (data["noise"] != "none").any():
        display.insert(len(display.columns) - 1, "noise", data["noise"].values)
    if pd.notna(data["max_train_samples"]).any():
        display.insert(len(display.columns) - 1, "train samples",
                       ["all" if pd.isna(n) else str(int(n)) for n in data["max_train_samples"]])
    if data["adapted"].astype(bool).any():  # runs resubmitted with a smaller micro-batch after a CUDA OOM
        display["adapted after OOM"] = data["adapted"].values
    owners = _col(configs, "owners").fillna("").astype(str)
    data["owners"] = owners.values
    if len({name for text in owners for name in text.split(", ") if name}) > 1:  # runs of several roots
        display.insert(2, "owners", owners.values)
    return Table("configurations", "Configurations", data, display,
                 note="n: completed runs (seeds) of the configuration." + (ADAPTED_NOTE if "adapted after OOM" in display else ""))


def accuracy_speed_table(configs: pd.DataFrame, analysis: Analysis, name: str, title: str) -> Table:
    """EM, F1 (or accuracy), eval time and speed, train loss, time and speed, deltas."""
    primary = analysis.primary
    metrics = [metric for metric in METRIC_LABELS if f"{metric}_mean" in configs
               and configs[f"{metric}_mean"].notna().any()]
    data = pd.DataFrame({"id": configs.index, "series": configs["series"].values, "n": configs["n"].values})
    display = pd.DataFrame({"ID": configs.index, "n": configs["n"].values})
    for metric in metrics:
        for stat in ("mean", "std", "ci_low", "ci_high", "boot_ci_low", "boot_ci_high"):
            data[f"{metric}_{stat}"] = _col(configs, f"{metric}_{stat}").values
        display[METRIC_LABELS[metric]] = _cells(configs, fmt_mean_std, f"{metric}_mean", f"{metric}_std")
        if metric == primary:
            for kind, label in (("ci", "95% CI (t)"), ("boot_ci", "95% CI (bootstrap)")):
                display[f"{METRIC_LABELS[metric]} {label}"] = [
                    fmt_ci(low, high) if n >= MIN_CI_N else f"none (n={n})"
                    for low, high, n in zip(_col(configs, f"{metric}_{kind}_low"),
                                            _col(configs, f"{metric}_{kind}_high"), configs["n"])]
            overlaps = _col(configs, f"{metric}_boot_ci_overlaps_baseline")
            data[f"{metric}_boot_ci_overlaps_baseline"] = overlaps.values
            display[f"CI overlaps {_baseline_label(configs).removeprefix('vs ')}'s"] = [
                _overlap_text(overlap, cid, baseline, n)
                for overlap, cid, baseline, n in zip(overlaps, configs.index, _col(configs, "baseline_id"),
                                                     configs["n"])]
    columns = (("eval_runtime_s", "eval time (s)", 1), ("eval_samples_per_s", "eval samples/s", 2),
               ("train_loss", "train loss", 4), ("train_runtime_s", "train time (s)", 1),
               ("train_samples_per_s", "train samples/s", 2))
    for metric, label, digits in columns:
        data[f"{metric}_mean"] = _col(configs, f"{metric}_mean").values
        data[f"{metric}_std"] = _col(configs, f"{metric}_std").values
        display[label] = _cells(configs, fmt_mean_std, f"{metric}_mean", f"{metric}_std", digits=digits)
    latency = _latency_columns(configs, data, display)
    _best_columns(configs, data, display)
    _delta_columns(configs, primary, data, display)
    return Table(name, title, data, display,
                 note=f"mean ± std over seeds; 95% CI (t): Student-t interval of the mean; 95% CI (bootstrap): "
                      "percentile bootstrap of the mean over seeds (2000 resamples, fixed seed; never wider than "
                      f"the seeds' range); both none below n = {MIN_CI_N} seeds (too few for an interval that keeps "
                      "its coverage); CI overlaps: whether the bootstrap CIs of the configuration and its baseline "
                      "overlap (descriptive; the comparison table tests the difference); Pareto: no configuration is both "
                      "faster and more accurate (anomalous ones left out); †: the speed-up may not be real, "
                      "see the speed caveat." + (LATENCY_NOTE if latency else "")
                      + (BEST_NOTE if "best step" in display else ""))


def _overlap_text(overlap: Any, config_id: Any, baseline: Any, n: Any) -> str:
    """yes / no, or why there is no answer (the baseline itself, no baseline, too few seeds)."""
    if isinstance(overlap, (bool, np.bool_)):
        return "yes" if overlap else "no"
    if not isinstance(baseline, str):
        return "no baseline"
    if baseline == config_id:
        return "baseline"
    return f"none (n={n})" if n < MIN_CI_N else f"none (baseline n<{MIN_CI_N})"


LATENCY_NOTE = (" latency: inference ms a forward pass on the evaluation set after warm-up, p50 / p95 (means over "
                "seeds), at batch size 1 and N (the run's eval_batch_size), on the run's device; –: not measured "
                "(latency off, or result.json latency_ms.unmeasured says why).")


def _latency_columns(configs: pd.DataFrame, data: pd.DataFrame, display: pd.DataFrame) -> bool:
    """The latency columns, where any configuration measured latency; whether they were added."""
    sizes = _col(configs, "latency_ms.batch_size")
    if not sizes.notna().any():
        return False
    data["latency_batch_size"] = sizes.values
    data["latency_device"] = _col(configs, "latency_ms.device").values
    for name in LATENCY_METRICS:
        data[f"{name}_mean"] = _col(configs, f"{name}_mean").values
        data[f"{name}_std"] = _col(configs, f"{name}_std").values
    display["latency bs 1 (ms) p50 / p95"] = _cells(configs, _fmt_percentiles, "latency_1_p50_ms_mean",
                                                    "latency_1_p95_ms_mean")
    display["latency bs N (ms) p50 / p95"] = [
        text if text == MISSING or pd.isna(size) else f"{text} (N={int(size)})"
        for text, size in zip(_cells(configs, _fmt_percentiles, "latency_N_p50_ms_mean", "latency_N_p95_ms_mean"),
                              sizes)]
    return True


def _fmt_percentiles(p50: Any, p95: Any) -> str:
    """``3.21 / 4.05``; an en dash when the median was not measured."""
    text = fmt_number(p50)
    return text if text == MISSING else f"{text} / {fmt_number(p95)}"


def _best_columns(configs: pd.DataFrame, data: pd.DataFrame, display: pd.DataFrame) -> None:
    """best step / best epoch (mean ± std over seeds) of the runs evaluated during training, when any was."""
    for metric, label in (("best_step", "best step"), ("best_epoch", "best epoch")):
        if _col(configs, f"{metric}_mean").notna().any():
            data[f"{metric}_mean"] = _col(configs, f"{metric}_mean").values
            data[f"{metric}_std"] = _col(configs, f"{metric}_std").values
            display[label] = _cells(configs, fmt_mean_std, f"{metric}_mean", f"{metric}_std", digits=1)


def _delta_columns(configs: pd.DataFrame, primary: str | None, data: pd.DataFrame, display: pd.DataFrame) -> None:
    against = _baseline_label(configs)
    data["baseline_id"] = _col(configs, "baseline_id").values
    data["speedup"] = _col(configs, "speedup").values
    caveats = _col(configs, "speed_caveat").fillna("").astype(str)
    data["speed_caveat"] = caveats.values
    display[f"speed-up {against}"] = [text + (" †" if caveat and text != "–" else "")
                                      for text, caveat in zip(_cells(configs, fmt_ratio, "speedup"), caveats)]
    if primary is not None:
        data[f"{primary}_delta"] = _col(configs, f"{primary}_delta").values
        display[f"Δ{METRIC_LABELS.get(primary, primary)} {against}"] = _cells(configs, fmt_delta, f"{primary}_delta")
    pareto = _col(configs, "pareto").fillna(False).astype(bool)
    data["pareto"] = pareto.values
    display["Pareto"] = ["yes" if value else "" for value in pareto]
    data["flags"] = configs["flags"].values
    display["flags"] = configs["flag_labels"].values
    if caveats.astype(bool).any():
        display["speed caveat"] = caveats.values


def comparison_table(comparisons: list[Comparison], primary: str | None) -> Table:
    """Each configuration against its baseline: Δ, its bootstrap CI, verdict, detectable Δ."""
    label = METRIC_LABELS.get(primary or "", primary or "metric")
    data = pd.DataFrame({
        "id": [c.config_id for c in comparisons], "baseline_id": [c.baseline_id for c in comparisons],
        "n": [c.n for c in comparisons], "baseline_n": [c.baseline_n for c in comparisons],
        "paired": [c.paired for c in comparisons], f"{primary}_difference": [c.difference for c in comparisons],
        "difference_ci_low": [c.ci_low for c in comparisons], "difference_ci_high": [c.ci_high for c in comparisons],
        "p_value": [c.p_value for c in comparisons], "detectable_difference": [c.detectable for c in comparisons],
        "verdict": [c.verdict for c in comparisons],
    })
    display = pd.DataFrame({
        "ID": data["id"], "vs": data["baseline_id"].fillna("–"),
        "seeds": [str(c.n) if c.verdict == "baseline" else f"{c.n} paired" if c.paired else f"{c.n} vs {c.baseline_n}"
                  for c in comparisons],
        f"Δ{label}": [fmt_delta(c.difference) for c in comparisons],
        "95% CI of Δ": [fmt_ci(c.ci_low, c.ci_high) for c in comparisons],
        "p": [fmt_number(c.p_value, 3) for c in comparisons],
        "verdict": data["verdict"],
        "smallest detectable Δ": [fmt_number(c.detectable) for c in comparisons],
    })
    return Table("comparison", f"Against the baseline: {label} difference and verdict", data, display,
                 note=f"Δ: mean {label} minus the baseline's; 95% CI of Δ: percentile bootstrap (2000 resamples, "
                      "fixed seed), paired by seed when both ran the same seeds; p: paired or Welch t-test. "
                      "better/worse only when the CI excludes 0 and p < 0.05; smallest detectable Δ: the true "
                      f"difference these seeds would detect with 80% power at the 5% level. Nothing is estimated "
                      f"below {MIN_SEEDS} seeds a side.")


def peft_table(configs: pd.DataFrame, analysis: Analysis) -> Table:
    """Method, trainable and total parameters, trainable share, metric and speed."""
    trainable, total = _col(configs, "trainable_params_mean"), _col(configs, "total_params_mean")
    share = 100.0 * trainable / total.where(total > 0)
    key = analysis.primary or "metric"
    label = METRIC_LABELS.get(key, key)
    metric = _col(configs, f"{key}_mean")
    data = pd.DataFrame({
        "id": configs.index, "method": configs["method"].values, "trainable_params": trainable.values,
        "total_params": total.values, "trainable_share_pct": share.values, f"{key}_mean": metric.values,
        "train_samples_per_s_mean": _col(configs, "train_samples_per_s_mean").values,
    })
    display = pd.DataFrame({
        "ID": configs.index, "method": configs["method"].values,
        "trainable params": [fmt_params(value) for value in trainable],
        "total params": [fmt_params(value) for value in total],
        "trainable share": [fmt_percent(value) for value in share], label: [fmt_number(v) for v in metric],
        "train samples/s": [fmt_number(v) for v in data["train_samples_per_s_mean"]],
    })
    return Table("peft", "Parameter-efficient fine-tuning: trainable parameters", data, display)


def memory_table(configs: pd.DataFrame, analysis: Analysis) -> Table:
    """Memory knobs against one training step's peak memory (after a warm-up step)."""
    alloc = _col(configs, "step_peak_allocated_mib_mean")
    reference = configs["baseline_id"].map(lambda bid: alloc.get(bid, np.nan) if isinstance(bid, str) else np.nan)
    change = 100.0 * (alloc / pd.to_numeric(reference, errors="coerce") - 1.0)
    metric = analysis.primary or "metric"
    label = METRIC_LABELS.get(metric, metric)
    knobs = {"optimizer": "train.optimizer", "gradient_checkpointing": "train.gradient_checkpointing",
             "precision": "train.precision", "compile": "train.compile.enabled"}
    data = pd.DataFrame({"id": configs.index})
    for knob, column in knobs.items():
        data[knob] = _col(configs, column).values
    data["compile"] = data["compile"].map(lambda value: bool(value) if isinstance(value, (bool, np.bool_)) else False)
    for name in ("step_peak_allocated_mib", "step_peak_reserved_mib", "train_samples_per_s", metric):
        data[f"{name}_mean"] = _col(configs, f"{name}_mean").values
    data["step_allocated_change_pct"] = change.values
    display = pd.DataFrame({
        "ID": configs.index, "optimizer": data["optimizer"].values,
        "grad. checkpointing": ["yes" if value is True else "no" for value in data["gradient_checkpointing"]],
        "precision": data["precision"].values, "compile": ["yes" if v else "no" for v in data["compile"]],
        "step peak allocated (MiB)": _cells(configs, fmt_mean_std, "step_peak_allocated_mib_mean",
                                            "step_peak_allocated_mib_std", digits=0),
        "step peak reserved (MiB)": _cells(configs, fmt_mean_std, "step_peak_reserved_mib_mean",
                                           "step_peak_reserved_mib_std", digits=0),
        f"allocated {_baseline_label(configs)}": [fmt_delta(v, 1) + "%" if np.isfinite(v) else "–" for v in change],
        "train samples/s": [fmt_number(v) for v in data["train_samples_per_s_mean"]],
        label: [fmt_number(v) for v in data[f"{metric}_mean"]],
    })
    return Table("memory", "Memory: one training step's peak after a warm-up step", data, display)


def vram_table(configs: pd.DataFrame) -> Table:
    """Peak allocated and reserved over the whole run against the device's memory."""
    reserved, total = _col(configs, "peak_reserved_mib_mean"), _col(configs, "device_total_mib_mean")
    share = 100.0 * reserved / total.where(total > 0)
    data = pd.DataFrame({"id": configs.index, "device": _col(configs, "memory.device_name").values})
    for key in ("peak_allocated_mib", "peak_reserved_mib"):
        data[f"{key}_mean"] = _col(configs, f"{key}_mean").values
        data[f"{key}_std"] = _col(configs, f"{key}_std").values
    data["device_total_mib"] = total.values
    data["reserved_share_pct"] = share.values
    display = pd.DataFrame({
        "ID": configs.index, "device": data["device"].fillna("–").values,
        "peak allocated (MiB)": _cells(configs, fmt_mean_std, "peak_allocated_mib_mean", "peak_allocated_mib_std",
                                       digits=0),
        "peak reserved (MiB)": _cells(configs, fmt_mean_std, "peak_reserved_mib_mean", "peak_reserved_mib_std",
                                      digits=0),
        "device total (MiB)": [fmt_number(value, 0) for value in total],
        "reserved share of device": [fmt_percent(value, 1) for value in share],
    })
    return Table("vram", "VRAM: peak over the run vs device memory", data, display)


def failure_table(runs: pd.DataFrame) -> Table:
    """Current runs that failed or whose result.json cannot be read."""
    if runs.empty:
        bad = runs
    else:
        bad = runs[runs["current"] & runs["status"].isin([FAILED, CORRUPT])]
    data = pd.DataFrame({
        "run_id": bad.get("run_id", pd.Series(dtype=str)).values,
        "config_id": bad.get("config_id", pd.Series(dtype=str)).values,
        "status": bad.get("status", pd.Series(dtype=str)).values,
        "reason": _col(bad, "failure.reason").values, "message": _col(bad, "failure.message").values,
    })
    display = data.rename(columns={"run_id": "run", "config_id": "ID"}).astype(object).fillna("–")
    return Table("failures", "Failed runs", data, display)
