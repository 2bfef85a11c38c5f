"""What the figures draw (issue 14): anomalies off the Pareto front, every seed's loss."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect_fixtures import analysed, build_seed_study

from orchestrator.collect.plots import loss_figure, pareto_figure


def _points(figure, label: str) -> set[tuple[float, float]]:
    ax = figure.axes[0]
    handles, labels = ax.get_legend_handles_labels()
    collection = handles[labels.index(label)]
    return {(round(x, 6), round(y, 6)) for x, y in np.asarray(collection.get_offsets())}


def test_pareto_plot_draws_anomalies_as_anomalies_not_on_the_front(tmp_path: Path) -> None:
    analysis, _ = analysed(build_seed_study(tmp_path).experiment_dir)
    configs = analysis.configs[analysis.configs["n"] > 0]
    figure = pareto_figure(configs, analysis.primary, analysis.baseline)
    point = lambda cid: (round(configs.at[cid, "train_samples_per_s_mean"], 6), round(configs.at[cid, "f1_mean"], 6))
    front = _points(figure, "Pareto front")
    anomalies = _points(figure, "anomaly (not on the front)")
    assert point("B3") in anomalies and point("B3") not in front  # the short run was drawn on the front
    assert front == {point("A4-nb"), point("B2")}
    assert {point(cid) for cid in ("A2", "A4-b", "B3", "C2")} == anomalies


def test_loss_plot_draws_every_seed_and_says_so(tmp_path: Path) -> None:
    study = build_seed_study(tmp_path)
    analysis, curves = analysed(study.experiment_dir)
    configs = analysis.configs[analysis.configs["n"] > 0]
    figure = loss_figure(configs, curves)
    lines = sum(len(collection.get_segments()) for ax in figure.axes for collection in ax.collections)
    drawn = {cid for series in "ABCD" for cid in configs.index if cid.startswith(series)}
    assert lines == sum(int(configs.at[cid, "n"]) for cid in drawn) == 40  # the current finished runs
    assert "every seed" in figure._suptitle.get_text()
    labels = [text.get_text() for ax in figure.axes for text in ax.get_legend().get_texts()]
    assert "A1 (3 seeds)" in labels and "C2-8 (2 seeds)" in labels


def test_loss_plot_leaves_a_gap_where_a_loss_is_not_finite() -> None:
    import pandas as pd

    configs = pd.DataFrame({"run_ids": [["r1", "r2"]], "series": ["A"]}, index=["A1"])
    curves = {"r1": ([0.0, 1.0, 2.0, 3.0], [1.0, float("inf"), 0.5, 0.4]),
              "r2": ([0.0, 1.0, 2.0, 3.0], [1.2, float("nan"), 0.6, 0.3])}
    figure = loss_figure(configs, curves)
    ax = figure.axes[0]
    assert np.isfinite(ax.get_ylim()).all() and ax.get_ylim()[1] < 1.5  # the diverged point is not on the axes
    (collection,) = ax.collections
    assert [np.isnan(path.vertices[:, 1]).tolist() for path in collection.get_paths()] == [[False, True, False, False]] * 2
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["A1 (2 seeds)"]
