"""Issue 11: collect draws train-vs-validation curves (mean over seeds, min-max band) from the
evaluation lines of metrics.jsonl, and reports each configuration's best step and epoch."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect_fixtures import analysed, build_sst2_study

from orchestrator.collect import collect
from orchestrator.collect.curves import best_columns, curves_figure, read_eval_curve

# validation accuracy of seed s at steps 100..400: the curve peaks at step 200, the first seed by 1 point less
VALIDATION = {100: 80.0, 200: 90.0, 300: 88.0, 400: 85.0}
TRAIN = {100: 81.0, 200: 93.0, 300: 97.0, 400: 99.0}  # over-fitting: training keeps rising


def _eval_line(step: int, split: str, accuracy: float, loss: float) -> dict[str, Any]:
    return {"step": step, "epoch": step / 200, "split": split, "metrics": {"accuracy": accuracy, "loss": loss},
            "time": 1.0e9 + step, "runtime_s": 0.5}


def _add_evaluations(experiment_dir: Path, only: str = "F1") -> list[Path]:
    """Evaluation lines for every run of configuration ``only``: seed s adds s - 2 points (seeds 1..3)."""
    touched = []
    for run_dir in sorted((experiment_dir / "runs").iterdir()):
        spec = json.loads((run_dir / "spec.json").read_text())
        if spec["base_name"] != only:
            continue
        offset = spec["train"]["seed"] - 2
        lines = [_eval_line(step, split, value + offset, 1.0 - value / 100)
                 for step in VALIDATION for split, value in (("validation", VALIDATION[step]), ("train", TRAIN[step]))]
        # a requeued attempt that wrote step 300 again before it was dropped: read once, the last wins
        lines.append(_eval_line(300, "validation", VALIDATION[300] + offset, 1.0 - VALIDATION[300] / 100))
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in lines)
        touched.append(run_dir)
    return touched


def test_eval_lines_are_read_once_and_the_best_follows_the_metrics_direction() -> None:
    lines = [_eval_line(step, "validation", VALIDATION[step], 1.0 - VALIDATION[step] / 100) for step in VALIDATION]
    lines += [{"step": 5, "loss": 0.7, "epoch": 0.1}, _eval_line(200, "validation", 90.0, 0.1)]  # loss line; repeat
    points = read_eval_curve(lines)
    assert [(split, step) for split, step, _, _ in points] == [("validation", s) for s in (100.0, 200.0, 300.0, 400.0)]
    assert best_columns(points, "accuracy")["curve.best_step"] == 200.0
    assert best_columns(points, "accuracy")["curve.best_epoch"] == 1.0
    assert best_columns(points, "loss")["curve.best_step"] == 200.0  # the repeated line (loss 0.1) won
    assert best_columns(points, "f1")["curve.best_step"] is None  # a metric never evaluated: unknown, not 0


def test_curves_are_the_mean_over_seeds_with_a_min_max_band(tmp_path: Path) -> None:
    experiment_dir = build_sst2_study(tmp_path, seeds=(1, 2, 3))
    assert len(_add_evaluations(experiment_dir)) == 3
    analysis, _ = analysed(experiment_dir)
    configs = analysis.configs[analysis.configs["n"] > 0]
    assert configs.at["F1", "best_step_mean"] == 200 and configs.at["F1", "best_epoch_mean"] == 1.0
    assert np.isnan(configs.at["Q1 (r=32)", "best_step_mean"])  # not evaluated during training: no best step
    eval_curves = {str(run_id): points for run_id, points in _eval_curves(experiment_dir).items()}
    figure = curves_figure(configs, eval_curves, analysis.primary)
    assert figure is not None and "band: lowest to highest seed" in figure._suptitle.get_text()
    ax = figure.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    validation, train = lines["F1 validation (3 seeds)"], lines["F1 train (3 seeds)"]
    assert list(validation.get_xdata()) == [100, 200, 300, 400]
    assert list(validation.get_ydata()) == pytest.approx(list(VALIDATION.values()))  # offsets -1, 0, +1: mean
    assert list(train.get_ydata()) == pytest.approx(list(TRAIN.values()))
    assert train.get_linestyle() == "--" and validation.get_linestyle() == "-"
    band = ax.collections[0].get_paths()[0].vertices  # fill_between: the band's outline
    assert band[:, 1].min() == pytest.approx(min(VALIDATION.values()) - 1)
    assert band[:, 1].max() == pytest.approx(max(VALIDATION.values()) + 1)


def _eval_curves(experiment_dir: Path) -> dict[str, Any]:
    from orchestrator.collect.frame import build_runs_frame
    from orchestrator.collect.reader import refresh, scan

    runs_dir = experiment_dir / "runs"
    index, _ = refresh(runs_dir, scan(runs_dir), {})
    return build_runs_frame((record for _, record in index.values()), None).eval_curves


def test_collect_writes_the_curve_plot_and_the_best_step_column(tmp_path: Path) -> None:
    experiment_dir = build_sst2_study(tmp_path, seeds=(1, 2, 3))
    _add_evaluations(experiment_dir)
    out = tmp_path / "out"
    collect(experiment_dir, out, formats=frozenset({"csv", "md", "png"}))
    assert (out / "plots" / "train_vs_validation.png").stat().st_size > 1000
    with open(out / "tables" / "accuracy_speed.csv", encoding="utf-8") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert float(rows["F1"]["best_step_mean"]) == 200.0 and rows["Q1 (r=32)"]["best_step_mean"] == ""
    markdown = (out / "tables" / "accuracy_speed.md").read_text()
    assert "best step" in markdown and "best epoch" in markdown


def test_without_evaluations_nothing_changes(tmp_path: Path) -> None:
    experiment_dir = build_sst2_study(tmp_path, seeds=(1,))
    out = tmp_path / "out"
    collect(experiment_dir, out, formats=frozenset({"csv", "png"}))
    assert not (out / "plots" / "train_vs_validation.png").exists()
    with open(out / "tables" / "accuracy_speed.csv", encoding="utf-8") as handle:
        assert "best_step_mean" not in next(csv.reader(handle))
