"""Statistics over seeds: mean, standard deviation, bootstrap CI, n; Pareto fronts.

The bootstrap is fixed so a table never changes between collects of the same data:
for a configuration with n finite values, ``BOOTSTRAP_RESAMPLES`` resamples of n
indices are drawn with ``numpy.random.default_rng(BOOTSTRAP_SEED).integers(0, n,
size=(BOOTSTRAP_RESAMPLES, n))`` (a fresh generator per configuration), the mean of
each resample is taken, and the CI is ``numpy.percentile(means, [2.5, 97.5])``.
With n = 1 there is no spread: std and CI are NaN (shown as blank) and n says 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000
CI_PERCENTILES = (2.5, 97.5)


@lru_cache(maxsize=64)
def _resample_indices(n: int) -> np.ndarray:
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    indices = rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    indices.setflags(write=False)
    return indices


def bootstrap_ci(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean of the finite ``values``; NaN when n < 2."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size < 2:
        return (float("nan"), float("nan"))
    means = data[_resample_indices(data.size)].mean(axis=1)
    low, high = np.percentile(means, CI_PERCENTILES)
    return (float(low), float(high))


def bootstrap_cis(groups: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``bootstrap_ci`` of many groups at once (groups of equal size share one batched
    computation; the numbers are the same as one call a group)."""
    low = np.full(len(groups), np.nan)
    high = np.full(len(groups), np.nan)
    cleaned = [np.asarray(group, dtype=float) for group in groups]
    cleaned = [group[np.isfinite(group)] for group in cleaned]
    by_size: dict[int, list[int]] = {}
    for position, group in enumerate(cleaned):
        if group.size >= 2:
            by_size.setdefault(group.size, []).append(position)
    for size, members in by_size.items():
        indices = _resample_indices(size)
        chunk = max(1, 4_000_000 // (BOOTSTRAP_RESAMPLES * size))  # bound the temporary to ~32 MB
        for start in range(0, len(members), chunk):
            part = members[start:start + chunk]
            matrix = np.stack([cleaned[position] for position in part])
            means = matrix[:, indices].mean(axis=2)
            bounds = np.percentile(means, CI_PERCENTILES, axis=1)
            low[part], high[part] = bounds[0], bounds[1]
    return low, high


def aggregate(
    runs: pd.DataFrame, by: str, metrics: Mapping[str, str], ci_metrics: Sequence[str] = ()
) -> pd.DataFrame:
    """One row a group of ``by``: ``<name>_mean``, ``<name>_std`` (ddof=1), ``<name>_n`` for
    each ``name -> column`` of ``metrics`` present in ``runs``, and ``<name>_ci_low/high``
    for the names in ``ci_metrics``. Non-finite values are left out of every statistic."""
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
            arrays = _group_arrays(values[column].to_numpy(dtype=float), grouped.ngroup().to_numpy(), len(out))
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_cis(arrays)
    return out


def _group_arrays(values: np.ndarray, codes: np.ndarray, count: int) -> list[np.ndarray]:
    """The values of each group code 0..count-1, in their original order."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(count + 1))
    ordered = values[order]
    return [ordered[bounds[i]:bounds[i + 1]] for i in range(count)]


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
