"""Metric against the number of training examples N: the few-shot / scaling study.

A study is a scaling study when its finished configurations set ``data.max_train_samples``
(the resolved knob of the runs, whatever the configurations are called) to at least two
values, no cap ("full") counting as one. Its configurations fall into series: those
whose knobs agree on everything but ``data.max_train_samples`` (and the seed). Each
configuration is one point of its series: N, the mean of the primary metric over its
seeds, the 95% Student-t and percentile-bootstrap CIs of that mean (n >= 3, else NaN)
and the std.

N = 0 is the zero-shot point (the initial model evaluated). A configuration without a
cap trained on the whole training set: it is drawn at the number of rows its runs
trained on (result.json ``data.train_examples``) when they recorded it, else at a
labelled position right of the largest N ("full (size not recorded)").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.tasks import metric_labels
from orchestrator.collect.analysis import Analysis
from orchestrator.collect.render import Table, fmt_ci, fmt_mean_std
from orchestrator.collect.stats import MIN_CI_N

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCALING_KNOB = "train.data.max_train_samples"
IGNORED_KNOBS = ("train.seed", SCALING_KNOB)
UNRECORDED_FULL_FACTOR = 3.0  # a "full" point whose size is unknown: this many times the largest N
MAX_SERIES = 8
MAX_LABEL_CHARS = 60
STATS = ("mean", "std", "ci_low", "ci_high", "boot_ci_low", "boot_ci_high")


def scaling_points(analysis: Analysis) -> pd.DataFrame | None:
    """One row a finished configuration of a scaling study, ordered by series then N; None
    when the study is not one (see the module docstring) or has no primary metric.

    Columns: config_id, series, max_train_samples (NaN: full), train_examples (the x drawn;
    NaN for a full point whose size was not recorded), full_recorded, n, and the primary
    metric's mean, std, ci_low/high (t), boot_ci_low/high (bootstrap)."""
    primary, configs = analysis.primary, analysis.configs
    if primary is None or configs.empty or "max_train_samples" not in configs or f"{primary}_mean" not in configs:
        return None
    done = configs[(configs["n"] > 0) & configs[f"{primary}_mean"].notna()]
    caps = pd.to_numeric(done["max_train_samples"], errors="coerce")
    if caps.notna().sum() == 0 or caps.nunique() + int(caps.isna().any()) < 2:
        return None
    recorded = pd.to_numeric(done.get("train_examples_mean", pd.Series(np.nan, index=done.index)), errors="coerce")
    points = pd.DataFrame({
        "config_id": done.index, "series": series_labels(analysis.runs, done).values,
        "max_train_samples": caps.values,
        "train_examples": np.where(caps.notna(), caps, recorded).astype(float),
        "full_recorded": (caps.isna() & recorded.notna()).values, "n": done["n"].values,
    })
    for stat in STATS:
        column = f"{primary}_{stat}"
        points[column] = done[column].values if column in done else np.nan
    rank = {name: position for position, name in enumerate(dict.fromkeys(points["series"]))}  # configs' order
    order = points.assign(_series=points["series"].map(rank), _x=points["train_examples"].fillna(np.inf))
    return order.sort_values(["_series", "_x"], kind="stable").drop(columns=["_series", "_x"]).reset_index(drop=True)


def series_labels(runs: pd.DataFrame, configs: pd.DataFrame) -> pd.Series:
    """config_id -> its series' label: the method and the knobs that tell the series apart
    (``LoRA r=8: lora.r=8``), from the runs' ``train.*`` knobs without the seed and N.

    Knobs set to different values name a series; knobs set in some series only (a method's
    own, ``lora.alpha``) are named too only when the method and those values cannot tell
    two series apart."""
    current = runs[runs["current"] & runs["config_id"].isin(configs.index)]
    knob_columns = [c for c in current.columns if c.startswith("train.") and c not in IGNORED_KNOBS]
    firsts = current.drop_duplicates("config_id").set_index("config_id")[knob_columns]
    signatures = {cid: {k: repr(v) for k, v in row.items() if not _missing(v)} for cid, row in firsts.iterrows()}
    keys = sorted({k for knobs in signatures.values() for k in knobs})
    values = {k: [knobs.get(k) for knobs in signatures.values()] for k in keys}
    differing = [k for k in keys if len({v for v in values[k] if v is not None}) > 1]
    partial = [k for k in keys if None in values[k] and k not in differing]
    series = {cid: tuple(signatures.get(cid, {}).get(k) for k in keys) for cid in configs.index}
    for shown in (differing, sorted(differing + partial)):
        labels = {cid: _label(str(configs.at[cid, "method"]), firsts, cid, shown) for cid in configs.index}
        if len(set(labels.values())) == len(set(series.values())):
            break
    return pd.Series(labels).reindex(configs.index)


def _label(method: str, knobs: pd.DataFrame, config_id: Any, shown: list[str]) -> str:
    row = knobs.loc[config_id] if config_id in knobs.index else pd.Series(dtype=object)
    words = ", ".join(f"{k.removeprefix('train.')}={_text(row[k])}" for k in shown if not _missing(row.get(k)))
    label = method + (f": {words}" if words else "")
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _seeds_text(counts: pd.Series) -> str:
    low, high = int(counts.min()), int(counts.max())
    return f"{high} seed{'s' if high > 1 else ''}" if low == high else f"{low}-{high} seeds"


def n_text(cap: float, size: float) -> str:
    """How a point's N reads: ``0 (zero-shot)``, ``300``, ``full (67,349)``, ``full (size not recorded)``."""
    if np.isfinite(cap):
        return "0 (zero-shot)" if cap == 0 else f"{int(cap):,}"
    return f"full ({int(size):,})" if np.isfinite(size) else "full (size not recorded)"


def scaling_table(points: pd.DataFrame, primary: str) -> Table:
    """The ``scaling`` table: series, N, seeds, mean ± std, both 95% CIs of the mean."""
    label = metric_labels().get(primary, primary)
    data = points.copy()
    digits = 3 if points[f"{primary}_mean"].abs().max() <= 1.0 else 2  # a fraction (accuracy 0.913) needs three
    display = pd.DataFrame({
        "series": points["series"], "ID": points["config_id"],
        "N": [n_text(cap, size) for cap, size in zip(points["max_train_samples"], points["train_examples"])],
        "seeds": points["n"],
        label: [fmt_mean_std(m, s, digits) for m, s in zip(points[f"{primary}_mean"], points[f"{primary}_std"])],
    })
    for kind, name in (("ci", "95% CI (t)"), ("boot_ci", "95% CI (bootstrap)")):
        display[name] = [fmt_ci(low, high, digits) if n >= MIN_CI_N else f"none (n={n})"
                         for low, high, n in zip(points[f"{primary}_{kind}_low"], points[f"{primary}_{kind}_high"],
                                                 points["n"])]
    return Table("scaling", f"Scaling: {label} against the number of training examples N", data, display,
                 note=f"one row a configuration; series: the configurations whose knobs differ only in "
                      f"data.max_train_samples (N); N 0: zero-shot (no training, the initial model evaluated); "
                      f"full: no cap, with the rows trained on (result.json data.train_examples) when recorded. "
                      f"mean ± std over seeds; 95% CIs of the mean: Student-t and percentile bootstrap (2000 "
                      f"resamples, fixed seed), none below n = {MIN_CI_N} seeds.")


def scaling_figure(points: pd.DataFrame | None, primary: str | None) -> Figure | None:
    """Mean metric against N (symlog x: 0 drawn), one line a series, the t CI as a band."""
    if points is None or points.empty or primary is None:
        return None
    from matplotlib.figure import Figure

    label = metric_labels().get(primary, primary)
    positive = points["max_train_samples"][points["max_train_samples"] > 0]
    largest = float(positive.max()) if not positive.empty else 1.0
    xs = points["train_examples"].fillna(largest * UNRECORDED_FULL_FACTOR)
    figure = Figure(figsize=(7.5, 4.8), dpi=100)
    figure.subplots_adjust(left=0.11, right=0.97, bottom=0.2, top=0.88)
    ax = figure.add_subplot()
    names = list(dict.fromkeys(points["series"]))
    for colour, series in enumerate(names[:MAX_SERIES]):
        rows = points["series"] == series
        x, mean = xs[rows].to_numpy(float), points.loc[rows, f"{primary}_mean"].to_numpy(float)
        low, high = points.loc[rows, f"{primary}_ci_low"].to_numpy(float), points.loc[rows, f"{primary}_ci_high"]
        ax.plot(x, mean, marker="o", color=f"C{colour}", label=f"{series} ({_seeds_text(points.loc[rows, 'n'])})")
        ax.fill_between(x, low, high.to_numpy(float), color=f"C{colour}", alpha=0.2, linewidth=0)
    ax.set_xscale("symlog", linthresh=max(1.0, float(positive.min()) if not positive.empty else 1.0))
    ticks = sorted(set(zip(xs, (n_text(c, s) for c, s in zip(points["max_train_samples"], points["train_examples"])))))
    ax.set_xticks([x for x, _ in ticks], [text.replace(" (", "\n(") for _, text in ticks], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("training examples N (symlog; 0: zero-shot)")
    ax.set_ylabel(f"{label} (mean over seeds)")
    title = f"{label} vs training examples"
    if len(names) > MAX_SERIES:
        title += f" (the first {MAX_SERIES} of {len(names)} series)"
    ax.set_title(title)
    figure.text(0.5, 0.01, f"band: 95% Student-t CI of the mean over seeds, drawn where n ≥ {MIN_CI_N}",
                ha="center", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figure
