"""Statistics over seeds: mean, standard deviation, CI of the mean, n; Pareto fronts.

The CI of a configuration's mean is Student's t interval, ``mean ± t(0.975, n-1) *
std / sqrt(n)``, given only from ``MIN_CI_N`` = 3 finite values: with n = 2 a
percentile bootstrap can only return [min, max] (its coverage is far below 95%),
and a t interval rests on one degree of freedom (t = 12.7: valid only if the seed
noise is exactly normal, and too wide to read). Below 3 the CI is NaN, and the
tables say "n<3". With n = 1 there is no spread: std is NaN too.

Beside it each configuration gets the percentile-bootstrap CI of its mean
(``<name>_boot_ci_low/high``, same rule: NaN below ``MIN_CI_N``). With 3-5 seeds it is
narrower than the t interval (a resampled mean never leaves [min, max]); the tables
show both so a reader sees how much the interval rests on the normal assumption.

The bootstrap (``bootstrap_ci``, per configuration and for differences against the
baseline in ``compare``) is fixed so a table never changes between collects of the same data:
``BOOTSTRAP_RESAMPLES`` resamples of n indices are drawn with
``numpy.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES,
n))``, the mean of each resample is taken, and the CI is ``numpy.percentile(means,
[2.5, 97.5])``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000
CI_PERCENTILES = (2.5, 97.5)
MIN_CI_N = 3


@lru_cache(maxsize=64)
def _resample_indices(n: int) -> np.ndarray:
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    indices = rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    indices.setflags(write=False)
    return indices


@lru_cache(maxsize=64)
def _resample_weights(n: int) -> np.ndarray:
    """(resamples, n): how often each value is drawn in each resample of ``_resample_indices``, over n,
    so ``values @ weights.T`` are the resampled means without a (groups, resamples, n) array."""
    indices = _resample_indices(n)
    weights = np.zeros(indices.shape, dtype=float)
    np.add.at(weights, (np.arange(indices.shape[0])[:, None], indices), 1.0 / n)
    weights.setflags(write=False)
    return weights


def bootstrap_ci(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean of the finite ``values``; NaN when n < 2."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size < 2:
        return (float("nan"), float("nan"))
    means = data[_resample_indices(data.size)].mean(axis=1)
    low, high = np.percentile(means, CI_PERCENTILES)
    return (float(low), float(high))


def grouped_bootstrap_ci(values: pd.Series, groups: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Per group of ``groups``, the ``bootstrap_ci`` of its finite ``values`` (same resamples, so
    the same numbers), NaN for a group of fewer than ``MIN_CI_N`` finite values. Groups of one
    size are resampled together (one array operation, not one call a configuration).

    Returns (low, high), each indexed by group in order of first appearance."""
    finite = pd.to_numeric(values, errors="coerce").replace([np.inf, -np.inf], np.nan).to_numpy(float)
    codes, keys = pd.factorize(groups, sort=False)
    low = np.full(len(keys), np.nan)
    high = np.full(len(keys), np.nan)
    keep = np.flatnonzero(np.isfinite(finite) & (codes >= 0))
    keep = keep[np.argsort(codes[keep], kind="stable")]  # each group's values together, in row order
    sizes = np.bincount(codes[keep], minlength=len(keys))
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    for size in np.unique(sizes[sizes >= MIN_CI_N]):
        members = np.flatnonzero(sizes == size)
        data = finite[keep[starts[members, None] + np.arange(size)]]  # (groups, size)
        means = data @ _resample_weights(int(size)).T  # (groups, resamples)
        low[members], high[members] = np.percentile(means, CI_PERCENTILES, axis=1)
    return pd.Series(low, index=pd.Index(keys)), pd.Series(high, index=pd.Index(keys))


def t_quantile(probability: float | np.ndarray, df: float | np.ndarray) -> np.ndarray:
    """Student's t quantile (``scipy.stats.t.ppf(probability, df)``), by scipy.special's ``stdtrit``: the
    same function without importing scipy.stats (0.6 s of a cold collect on a small login node)."""
    from scipy.special import stdtrit

    return np.asarray(stdtrit(df, probability), dtype=float)


def t_test_p(t: float, df: float) -> float:
    """Two-sided p-value of a t statistic with ``df`` degrees of freedom: ``2 * P(T_df <= -|t|)``, the
    p-value of scipy.stats' ``ttest_rel`` and ``ttest_ind`` (by scipy.special's ``stdtr``)."""
    from scipy.special import stdtr

    return float(2.0 * stdtr(df, -abs(t)))


def t_interval(mean: np.ndarray, std: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% Student-t CI of the mean for arrays of (mean, std with ddof=1, count);
    NaN where n < ``MIN_CI_N``."""
    count = np.asarray(n, dtype=float)
    enough = count >= MIN_CI_N
    quantile = np.where(enough, t_quantile(0.975, np.maximum(count - 1, 1)), np.nan)
    half = quantile * np.asarray(std, dtype=float) / np.sqrt(np.maximum(count, 1))
    return np.asarray(mean, dtype=float) - half, np.asarray(mean, dtype=float) + half


def aggregate(
    runs: pd.DataFrame, by: str, metrics: Mapping[str, str], ci_metrics: Sequence[str] = (),
    boot_metrics: Sequence[str] = (),
) -> pd.DataFrame:
    """One row a group of ``by``: ``<name>_mean``, ``<name>_std`` (ddof=1), ``<name>_n`` for
    each ``name -> column`` of ``metrics`` present in ``runs``, ``<name>_ci_low/high``
    (Student-t, n >= ``MIN_CI_N``) for the names in ``ci_metrics`` and
    ``<name>_boot_ci_low/high`` (percentile bootstrap, n >= ``MIN_CI_N``) for the names in
    ``boot_metrics``. Non-finite values are left out of every statistic."""
    present = {name: column for name, column in metrics.items() if column in runs.columns}
    values = runs[[by] + list(present.values())].copy()
    for column in present.values():
        values[column] = pd.to_numeric(values[column], errors="coerce").replace([np.inf, -np.inf], np.nan)
    grouped = values.groupby(by, sort=False)
    out = pd.DataFrame(index=pd.Index(grouped.size().index, name=by))
    for name, column in present.items():
        stats = grouped[column].agg(["mean", "std", "count"])
        out[f"{name}_mean"], out[f"{name}_std"], out[f"{name}_n"] = stats["mean"], stats["std"], stats["count"]
        if name in ci_metrics:
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = t_interval(stats["mean"], stats["std"], stats["count"])
        if name in boot_metrics:
            low, high = grouped_bootstrap_ci(values[column], values[by])
            out[f"{name}_boot_ci_low"], out[f"{name}_boot_ci_high"] = low.reindex(out.index), high.reindex(out.index)
    return out


def pareto_front(speed: Sequence[float] | np.ndarray, metric: Sequence[float] | np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point beats on both axes (higher is better on
    both; a point equal to a front point is on the front too; NaN is never on it)."""
    x = np.asarray(speed, dtype=float)
    y = np.asarray(metric, dtype=float)
    on_front = np.zeros(x.size, dtype=bool)
    valid = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    order = valid[np.lexsort((-y[valid], -x[valid]))]
    best_y = -np.inf
    last: tuple[float, float] | None = None
    for index in order:
        if y[index] > best_y:
            on_front[index], best_y, last = True, y[index], (x[index], y[index])
        elif last == (x[index], y[index]):
            on_front[index] = True
    return on_front


def ratio(value: float, reference: float) -> float:
    """value / reference, NaN when either is missing or the reference is 0."""
    if not (np.isfinite(value) and np.isfinite(reference)) or reference == 0:
        return float("nan")
    return float(value / reference)
