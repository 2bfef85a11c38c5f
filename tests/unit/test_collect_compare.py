"""Configurations against the baseline (issue 14): difference, bootstrap CI, verdict,
smallest detectable difference; and the caveats on speed-ups."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect_fixtures import build_seed_study

from orchestrator.collect import collect
from orchestrator.collect.caveats import concurrent_runs, speed_caveats
from orchestrator.collect.compare import BETTER, TOO_FEW, UNCLEAR, WORSE, compare_seeds

T_975_DF2, T_80_DF2 = 4.302652729911275, 1.0606601717798212


def percentile_bootstrap(values: np.ndarray) -> tuple[float, float]:
    """The documented recipe (seed 0, 2000 resamples), written out independently."""
    indices = np.random.default_rng(0).integers(0, values.size, size=(2000, values.size))
    low, high = np.percentile(values[indices].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def test_paired_by_seed_when_the_seeds_match() -> None:
    base = {"1": 70.0, "2": 71.0, "3": 72.5}
    own = {"1": 71.1, "2": 72.3, "3": 73.4}
    result = compare_seeds("X", "A1", own, base)
    diffs = np.array([1.1, 1.3, 0.9])
    assert result.paired and result.n == 3
    assert result.difference == pytest.approx(diffs.mean())
    assert (result.ci_low, result.ci_high) == tuple(pytest.approx(v) for v in percentile_bootstrap(diffs))
    assert result.detectable == pytest.approx((T_975_DF2 + T_80_DF2) * diffs.std(ddof=1) / math.sqrt(3))
    assert result.verdict == BETTER  # every seed gained about a point
    assert compare_seeds("Y", "A1", {k: v - 1.1 for k, v in own.items()}, base).verdict in (UNCLEAR, WORSE)


def test_unpaired_when_the_seeds_differ_and_noise_is_not_a_ranking() -> None:
    base = {"1": 70.0, "2": 72.0, "3": 71.0}
    own = {"4": 70.5, "5": 72.4, "6": 70.9}  # other seeds, +0.27 on average: well inside the noise
    result = compare_seeds("X", "A1", own, base)
    assert not result.paired
    assert result.ci_low < 0 < result.ci_high
    assert result.verdict == UNCLEAR
    assert result.detectable > abs(result.difference)


def test_worse_and_too_few_seeds() -> None:
    base = {"1": 70.0, "2": 70.4, "3": 69.8}
    assert compare_seeds("X", "A1", {"1": 60.0, "2": 60.3, "3": 59.9}, base).verdict == WORSE
    two = compare_seeds("X", "A1", {"1": 80.0, "2": 80.2}, base)
    assert two.verdict == TOO_FEW and math.isnan(two.ci_low) and math.isnan(two.detectable)


def test_comparison_table_of_the_seed_study(tmp_path: Path) -> None:
    study = build_seed_study(tmp_path)
    collect(study.experiment_dir, tmp_path / "out", formats=frozenset({"csv", "md"}))
    table = pd.read_csv(tmp_path / "out" / "tables" / "comparison.csv").set_index("id")
    assert table.loc["A1", "verdict"] == "baseline"
    assert table.loc["A4-nb", "verdict"] == BETTER and bool(table.loc["A4-nb", "paired"])
    assert table.loc["A4-nb", "f1_difference"] == pytest.approx(
        np.mean(study.values("A4-nb", "f1")) - np.mean(study.values("A1", "f1")), rel=1e-6)
    assert table.loc["C2-8", "verdict"] == TOO_FEW  # seed 3 failed: 2 seeds
    assert "## Against the baseline" in (tmp_path / "out" / "summary.md").read_text()


def _runs(rows: list[tuple[str, str, float, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["config_id", "node", "finished_at", "train_result.runtime_s",
                                       "memory.device_name"])


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_p_values_and_detectable_differences_are_scipy_stats_ones(seeds: int) -> None:
    """compare computes the t-tests from scipy.special (scipy.stats is slow to import): the same numbers."""
    from scipy import stats

    rng = np.random.default_rng(seeds)
    for _ in range(20):
        a, b = rng.normal(0.5, 0.2, seeds), rng.normal(0.4, rng.uniform(0.05, 0.5), seeds + 2)
        paired = compare_seeds("c", "b", dict(enumerate(a)), dict(enumerate(b[:seeds])))
        assert paired.paired and paired.p_value == pytest.approx(stats.ttest_rel(a, b[:seeds]).pvalue, rel=1e-9)
        se_paired = np.std(a - b[:seeds], ddof=1) / np.sqrt(seeds)
        expected = (stats.t.ppf(0.975, seeds - 1) + stats.t.ppf(0.8, seeds - 1)) * se_paired
        assert paired.detectable == pytest.approx(expected, rel=1e-9)
        welch = compare_seeds("c", "b", {f"x{i}": v for i, v in enumerate(a)}, dict(enumerate(b)))
        assert not welch.paired
        assert welch.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)


def test_runs_that_overlapped_on_a_node_are_flagged() -> None:
    # A1 spans 50..100 and B1's first run 90..120 on n1: they shared it; B1's second run came later
    runs = _runs([("A1", "n1", 100.0, 50.0, "T4"), ("B1", "n1", 120.0, 30.0, "T4"),
                  ("B1", "n1", 400.0, 50.0, "T4"), ("C1", "n2", 130.0, 100.0, "A100")])
    shared = concurrent_runs(runs)
    assert list(shared) == [True, True, False, False]
    configs = pd.DataFrame({"baseline_id": ["A1", "A1", "A1"]}, index=["A1", "B1", "C1"])
    caveats = dict(zip(configs.index, speed_caveats(runs, configs)))
    assert caveats["A1"] == "1 run(s) shared the machine with other runs"
    assert "1 run(s) shared the machine" in caveats["B1"] and "baseline A1's runs shared" in caveats["B1"]
    assert "device A100 vs baseline's T4" in caveats["C1"]


def test_contended_speedup_is_marked_in_the_table(tmp_path: Path) -> None:
    study = build_seed_study(tmp_path)
    # A4-nb seed 2 finished while A4-nb seed 1 was still training on the same node
    first = json_load(tmp_path, study.run("A4-nb", 1).run_id)
    second_path = study.experiment_dir / "runs" / study.run("A4-nb", 2).run_id / "result.json"
    second = pd.read_json(second_path, typ="series").to_dict()
    second["finished_at"] = first["finished_at"] - 100.0
    second_path.write_text(pd.Series(second).to_json(), encoding="utf-8")
    collect(study.experiment_dir, tmp_path / "out", formats=frozenset({"csv", "md"}))
    table = pd.read_csv(tmp_path / "out" / "tables" / "accuracy_speed.csv", keep_default_na=False).set_index("id")
    assert table.loc["A4-nb", "speed_caveat"] == "2 run(s) shared the machine with other runs"
    assert table.loc["A3", "speed_caveat"] == ""
    markdown = (tmp_path / "out" / "tables" / "accuracy_speed.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| A4-nb "))  # tabulate pads the column
    assert "1.17× †" in row and "shared the machine" in row


def json_load(tmp_path: Path, run_id: str) -> dict:
    import json

    return json.loads(next(tmp_path.rglob(f"runs/{run_id}/result.json")).read_text())
