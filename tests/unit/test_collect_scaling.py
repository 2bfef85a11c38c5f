"""collect for the scaling and seed studies (issue 11): per-configuration bootstrap CIs, whether
each overlaps its baseline's, and metric against the number of training examples N."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the fixtures live beside the tests

from collect_fixtures import analysed, build_seed_study
from scaling_fixtures import FULL_ROWS, SEEDS, SIZES, accuracy, build_scaling_study, seeds_of

from orchestrator.collect import collect
from orchestrator.collect.scaling import scaling_figure, scaling_points
from orchestrator.collect.stats import grouped_bootstrap_ci
from orchestrator.collect.tables import build_tables


def config_id(base: str, size: int | None) -> str:
    return f"{base} (max_train_samples={size})"


@pytest.fixture(scope="module")
def scaling_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scaling_study(tmp_path_factory.mktemp("scaling"))


def test_bootstrap_ci_of_three_seeds_is_their_range_and_none_below_three(scaling_dir: Path) -> None:
    # With 3 seeds, 1 resample in 27 (3.7% > 2.5%) repeats the lowest value three times: the
    # percentile-bootstrap CI of the mean is exactly [min, max] of the seeds.
    analysis, _ = analysed(scaling_dir)
    configs = analysis.configs
    for base in ("S1", "S2"):
        for size in SIZES:
            values = [accuracy(base, size, seed) for seed in seeds_of(base, size)]
            low, high = configs.loc[config_id(base, size), ["accuracy_boot_ci_low", "accuracy_boot_ci_high"]]
            if len(values) < 3:  # S2's zero-shot point: 2 seeds, no interval (not [min, max])
                assert math.isnan(low) and math.isnan(high)
                assert math.isnan(configs.at[config_id(base, size), "accuracy_ci_low"])
            else:
                assert (low, high) == pytest.approx((min(values), max(values)))


def test_grouped_bootstrap_matches_one_group_at_a_time() -> None:
    rng = np.random.default_rng(7)
    values = pd.Series(rng.normal(size=23))
    values[4] = np.inf  # non-finite values are left out, as in every statistic
    groups = pd.Series(["a"] * 5 + ["b"] * 9 + ["c"] * 2 + ["d"] * 7)
    low, high = grouped_bootstrap_ci(values, groups)
    from orchestrator.collect.stats import bootstrap_ci

    for name in "abd":
        assert (low[name], high[name]) == pytest.approx(bootstrap_ci(values[groups == name].to_numpy()))
    assert math.isnan(low["c"]) and math.isnan(high["c"])  # 2 values: below MIN_CI_N


def test_ci_overlap_with_the_baseline_column(scaling_dir: Path) -> None:
    analysis, _ = analysed(scaling_dir)
    overlaps = analysis.configs["accuracy_boot_ci_overlaps_baseline"]
    # S2 at N=100: [0.59, 0.68] against S1's [0.69, 0.72]; at 1000: [0.84, 0.87] against [0.85, 0.88]
    assert overlaps[config_id("S2", 100)] is False and overlaps[config_id("S2", 300)] is False
    assert overlaps[config_id("S2", 1000)] is True and overlaps[config_id("S2", None)] is True
    assert overlaps[config_id("S1", 100)] is None  # the baseline itself
    assert overlaps[config_id("S2", 0)] is None  # 2 seeds: no CI to overlap
    table = next(t for t in build_tables(analysis) if t.name == "accuracy_speed")
    shown = dict(zip(table.display["ID"], table.display["CI overlaps baseline's"]))
    assert shown[config_id("S2", 100)] == "no" and shown[config_id("S2", 1000)] == "yes"
    assert shown[config_id("S1", 100)] == "baseline" and shown[config_id("S2", 0)] == "none (n=2)"
    boot = dict(zip(table.display["ID"], table.display["accuracy 95% CI (bootstrap)"]))
    assert boot[config_id("S2", 0)] == "none (n=2)"
    assert {"accuracy_boot_ci_low", "accuracy_boot_ci_high", "accuracy_boot_ci_overlaps_baseline"} <= set(table.data)


def test_seed_study_tables_show_both_intervals(tmp_path: Path) -> None:
    study = build_seed_study(tmp_path)
    analysis, _ = analysed(study.experiment_dir)
    table = next(t for t in build_tables(analysis) if t.name == "accuracy_speed")
    row = table.data.set_index("id").loc["B2"]
    values = study.values("B2", "f1")
    assert (row["f1_boot_ci_low"], row["f1_boot_ci_high"]) == pytest.approx((min(values), max(values)))
    assert "F1 95% CI (t)" in table.display and "F1 95% CI (bootstrap)" in table.display
    assert scaling_points(analysis) is None  # no data.max_train_samples: not a scaling study
    assert "scaling" not in {t.name for t in build_tables(analysis)}


def test_scaling_points_series_from_knobs_not_names(scaling_dir: Path) -> None:
    analysis, _ = analysed(scaling_dir)
    assert set(analysis.configs["series"]) == {"S"}  # the names put every configuration in one series
    points = scaling_points(analysis)
    assert points is not None
    assert list(dict.fromkeys(points["series"])) == ["full", "LoRA r=8"]
    for base, series in (("S1", "full"), ("S2", "LoRA r=8")):
        rows = points[points["series"] == series]
        assert list(rows["config_id"]) == [config_id(base, size) for size in SIZES]
        assert list(rows["train_examples"]) == [0, 100, 300, 1000, FULL_ROWS]
        for size, (_, row) in zip(SIZES, rows.iterrows()):
            values = [accuracy(base, size, seed) for seed in seeds_of(base, size)]
            assert row["n"] == len(values)
            assert row["accuracy_mean"] == pytest.approx(np.mean(values))
            assert row["accuracy_std"] == pytest.approx(np.std(values, ddof=1))


def test_full_point_without_a_recorded_size_is_labelled(tmp_path: Path) -> None:
    analysis, _ = analysed(build_scaling_study(tmp_path, record_full=False))
    points = scaling_points(analysis)
    assert points is not None
    full = points[points["max_train_samples"].isna()]
    assert full["train_examples"].isna().all() and not full["full_recorded"].any()
    table = next(t for t in build_tables(analysis) if t.name == "scaling")
    assert set(table.display.loc[table.display["ID"].str.contains("None"), "N"]) == {"full (size not recorded)"}
    figure = scaling_figure(points, analysis.primary)
    labels = [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
    assert "full\n(size not recorded)" in labels and "0\n(zero-shot)" in labels
    assert figure.axes[0].get_xscale() == "symlog"


def test_collect_writes_the_scaling_plot_and_table(scaling_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = collect(scaling_dir, out, frozenset({"csv", "md", "png", "html"}))
    assert (out / "plots" / "scaling.png").stat().st_size > 10_000
    table = pd.read_csv(out / "tables" / "scaling.csv")
    lora = table[table["series"] == "LoRA r=8"].reset_index(drop=True)
    assert list(lora["n"]) == [2, 3, 3, 3, 3]
    assert lora.loc[1, "accuracy_mean"] == pytest.approx(np.mean([accuracy("S2", 100, s) for s in SEEDS]))
    assert lora.loc[1, "accuracy_boot_ci_low"] == pytest.approx(0.59)
    assert lora.loc[1, "accuracy_boot_ci_high"] == pytest.approx(0.68)
    assert math.isnan(lora.loc[0, "accuracy_ci_low"]) and math.isnan(lora.loc[0, "accuracy_boot_ci_low"])
    assert lora.loc[4, "train_examples"] == FULL_ROWS
    assert "## Scaling: accuracy against the number of training examples N" in report.summary_markdown
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Scaling: accuracy against" in html and "scaling" in html
