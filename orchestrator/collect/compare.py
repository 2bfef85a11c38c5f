"""Each configuration against its baseline: the difference in the primary metric, its
uncertainty, a plain verdict and the smallest difference the study could have seen.

For configuration c and baseline b with per-seed values of the primary metric:

- **paired** when c and b ran exactly the same seeds: the differences by seed are
  bootstrapped (``stats.bootstrap_ci``: percentile, 2000 resamples, fixed seed);
  the test is the paired t-test.
- **unpaired** otherwise: each side resampled independently (same fixed seeds),
  the difference of the resampled means; the test is Welch's t-test.
- Below ``MIN_SEEDS`` (3) a side, or 3 pairs, nothing is estimated: the verdict is
  "too few seeds".
- **verdict**: "better" / "worse" only when the bootstrap CI excludes 0 *and* the
  t-test gives p < 0.05 (a percentile bootstrap over 3-5 seeds is too narrow on its
  own); otherwise "not distinguishable at this n".
- **smallest detectable difference**: ``(t(0.975, df) + t(0.80, df)) * SE``, the true
  difference this many seeds would detect 80% of the time at the 5% level (SE and df
  of the test used). Higher metric values are better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.collect.analysis import Analysis
from orchestrator.collect.report import COMPLETED
from orchestrator.collect.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CI_PERCENTILES,
    bootstrap_ci,
    t_quantile,
    t_test_p,
)

MIN_SEEDS = 3
ALPHA = 0.05
POWER = 0.80
BETTER, WORSE, UNCLEAR, TOO_FEW, BASELINE = ("better", "worse", "not distinguishable at this n", "too few seeds",
                                             "baseline")


@dataclass(frozen=True)
class Comparison:
    """One configuration against its baseline (differences in the metric's units)."""

    config_id: str
    baseline_id: str | None
    n: int
    baseline_n: int
    paired: bool
    difference: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    p_value: float = float("nan")
    detectable: float = float("nan")
    verdict: str = TOO_FEW


def compare_all(analysis: Analysis) -> list[Comparison]:
    """A ``Comparison`` for every configuration with finished runs, in table order."""
    primary, configs, runs = analysis.primary, analysis.configs, analysis.runs
    if primary is None or configs.empty or f"metrics.{primary}" not in runs:
        return []
    done = runs[runs["current"] & (runs["status"] == COMPLETED)]
    values = pd.DataFrame({"config_id": done["config_id"], "seed": done["seed"].astype(str),
                           "value": pd.to_numeric(done[f"metrics.{primary}"], errors="coerce")}).dropna()
    by_config: dict[str, dict[str, float]] = {}
    for config_id, seed, value in zip(values["config_id"].tolist(), values["seed"].tolist(), values["value"].tolist()):
        by_config.setdefault(config_id, {})[seed] = value
    out = []
    baselines = configs["baseline_id"].to_dict()
    for config_id in configs.index[configs["n"] > 0]:
        baseline = baselines[config_id]
        own = by_config.get(config_id, {})
        if not isinstance(baseline, str) or baseline not in by_config:
            out.append(Comparison(str(config_id), None, len(own), 0, False, verdict="no baseline"))
        elif baseline == config_id:
            out.append(Comparison(str(config_id), baseline, len(own), len(own), False, verdict=BASELINE))
        else:
            out.append(compare_seeds(str(config_id), baseline, own, by_config[baseline]))
    return out


def compare_seeds(config_id: str, baseline_id: str, own: dict[str, float], base: dict[str, float]) -> Comparison:
    """``own`` against ``base`` (seed -> metric value)."""
    paired = bool(own) and set(own) == set(base)
    head = Comparison(config_id, baseline_id, len(own), len(base), paired)
    if min(len(own), len(base)) < MIN_SEEDS:
        return head
    a = np.array([own[seed] for seed in sorted(own)])
    b = np.array([base[seed] for seed in sorted(own)] if paired else [base[seed] for seed in sorted(base)])
    if paired:
        low, high = bootstrap_ci(a - b)
        se, df = float(np.std(a - b, ddof=1) / np.sqrt(a.size)), a.size - 1.0
        # the paired t-test (scipy.stats.ttest_rel): t = mean(a - b) / SE, n - 1 degrees of freedom
        p_value = t_test_p(float((a - b).mean()) / se, df) if _spread(se, a, b) else _p_without_spread(a, b)
    else:
        low, high = _independent_ci(a, b)
        va, vb = np.var(a, ddof=1) / a.size, np.var(b, ddof=1) / b.size
        se = float(np.sqrt(va + vb))
        df = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))) if se > 0 else a.size + b.size - 2.0
        # Welch's t-test (scipy.stats.ttest_ind, equal_var=False): t = (mean a - mean b) / SE, Welch's df
        p_value = t_test_p(float(a.mean() - b.mean()) / se, df) if _spread(se, a, b) else _p_without_spread(a, b)
    difference = float(a.mean() - b.mean())
    detectable = float((t_quantile(1 - ALPHA / 2, df) + t_quantile(POWER, df)) * se)
    verdict = UNCLEAR
    if p_value < ALPHA and low > 0:
        verdict = BETTER
    elif p_value < ALPHA and high < 0:
        verdict = WORSE
    return Comparison(config_id, baseline_id, a.size, b.size, paired, difference, low, high, p_value, detectable,
                      verdict)


def _independent_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Percentile-bootstrap CI of mean(a) - mean(b), each side resampled on its own."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means_a = a[rng.integers(0, a.size, size=(BOOTSTRAP_RESAMPLES, a.size))].mean(axis=1)
    means_b = b[rng.integers(0, b.size, size=(BOOTSTRAP_RESAMPLES, b.size))].mean(axis=1)
    low, high = np.percentile(means_a - means_b, CI_PERCENTILES)
    return float(low), float(high)


def _spread(se: float, a: np.ndarray, b: np.ndarray) -> bool:
    """The standard error is more than rounding noise (a t-test on identical values is 0/0)."""
    return se > 1e-9 * max(1.0, float(np.abs(a).max()), float(np.abs(b).max()))


def _p_without_spread(a: np.ndarray, b: np.ndarray) -> float:
    """Identical values within each side: any difference is exact (p 0), none is p 1."""
    return 0.0 if a.mean() != b.mean() else 1.0
