"""Issue 11, evaluation and training control: the knobs of evaluation during training and early
stopping, refused at submit (``orchestrate submit --dry-run``) with key, value and fix, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.contract import TrainConfig, config_hash
from jobs.tasks import get_task
from tests.unit.dry_run import dry_run

HEAD = """
experiment: curves
root: {root}
cluster: example-t4
executor: local
"""


def test_eval_steps_alone_means_the_steps_strategy_and_old_runs_keep_their_hash() -> None:
    train = TrainConfig(eval_steps=50, early_stopping={"metric": "f1"})
    assert train.eval_strategy == "steps"
    assert train.early_stopping is not None and train.early_stopping.greater_is_better
    assert TrainConfig(early_stopping={"metric": "loss"}).early_stopping.greater_is_better is False  # type: ignore[union-attr]
    # knobs added after runs existed: at their defaults, the config hash of every existing run is unchanged
    assert config_hash(TrainConfig()) == "a59ba623"
    assert config_hash(TrainConfig(eval_strategy="epoch")) != config_hash(TrainConfig())


def test_curve_metrics_come_from_the_tasks_registry() -> None:
    assert get_task("sst2").curve_metrics == ("accuracy", "loss")
    assert "loss" not in get_task("squad_v2").curve_metrics  # its evaluation features carry no labels
    assert "f1" in get_task("squad_v2").curve_metrics and "matthews_correlation" in get_task("cola").curve_metrics
    # MNLI's mismatched set is scored after training only (hub data): not a metric to stop on
    assert get_task("mnli").curve_metrics == ("accuracy", "loss")


def test_evaluation_knobs_refused_with_key_value_and_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = dry_run(tmp_path, HEAD, """
        defaults: {task: sst2, data: {synthetic: {}}, max_steps: 100}
        runs:
          NO_EVAL: {early_stopping: {metric: accuracy}, train_eval_samples: 50}
          EPOCH_STEPS: {eval_strategy: epoch, eval_steps: 10}
          STEPS_ALONE: {eval_strategy: steps}
          TOO_LATE: {eval_steps: 200}
          BAD_METRIC: {eval_steps: 10, early_stopping: {metric: acuracy}}
          QA_LOSS: {task: squad_v2, max_seq_length: 128, doc_stride: 32, eval_steps: 10, early_stopping: {metric: loss}}
          ZERO_SHOT: {eval_steps: 10, data: {synthetic: {}, max_train_samples: 0}}
          FINE: {eval_steps: 10, train_eval_samples: 50, early_stopping: {metric: loss, patience: 2, min_delta: 0.01}}
    """, capsys)
    assert code == 2, err
    expected = [
        ("runs.NO_EVAL.early_stopping: needs evaluation during training: add eval_steps: N or eval_strategy: epoch, "
        "or drop early_stopping"),
        "runs.NO_EVAL.train_eval_samples: needs evaluation during training",
        ("runs.EPOCH_STEPS.eval_steps: 10 only applies to eval_strategy: steps (it is epoch): drop eval_steps or "
        "write eval_strategy: steps"),
        "runs.STEPS_ALONE.eval_strategy: steps needs eval_steps: N",
        ("runs.TOO_LATE.eval_steps: 200 is more than max_steps (100): no evaluation would run; lower eval_steps to "
        "at most 100"),
        ("runs.BAD_METRIC.early_stopping.metric: 'acuracy' is not a validation metric of task sst2: write one of "
        "accuracy, loss (did you mean 'accuracy'?)"),
        "runs.QA_LOSS.early_stopping.metric: 'loss' is not a validation metric of task squad_v2: write one of exact, f1",
        ("runs.ZERO_SHOT.eval_steps: 10: data.max_train_samples 0 is a zero-shot run that does not train: "
        "set eval_steps: null on this run (or drop it)"),
    ]
    for line in expected:
        assert line in err, f"{line!r} not in:\n{err}"
    assert "runs.FINE" not in err
