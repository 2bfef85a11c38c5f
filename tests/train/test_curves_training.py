"""Issue 11, evaluation and training control, on the tiny random BERT and generated data:
evaluations during training land in metrics.jsonl at the right steps (SST-2 and SQuAD v2, both
splits), a resumed run neither repeats nor loses one, and early stopping stops after its patience
with the best checkpoint's weights evaluated and reported."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from transformers import TrainerCallback

from jobs.contract import EvalRecord, RunDir, TrainConfig, eval_records, read_jsonl
from jobs.preemption import Preempted
from jobs.trainer import run_training

pytestmark = [pytest.mark.train]

SST2 = {"task": "sst2", "data": {"synthetic": {"n_train": 48, "n_eval": 32, "seed": 0}}}


def _evaluations(run_dir: RunDir) -> list[dict[str, Any]]:
    records = eval_records(read_jsonl(run_dir.metrics_path))
    for record in records:
        EvalRecord.model_validate(record)  # every line is the contract's record
    return records


class PreemptAt(TrainerCallback):
    """Stands in for SLURM killing the job after ``step`` steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise Preempted(f"preempted at step {self.step}")


def test_sst2_evaluations_at_every_eval_steps_and_once_after_a_resume(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any
) -> None:
    train = tiny(**SST2, max_steps=6, eval_steps=2, save_steps=3, train_eval_samples=8)
    run_dir = run_dir_for("sst2")
    with pytest.raises(Preempted):  # evaluated at 2 and 4, checkpoint 3, killed after step 5
        run_training(spec_for(train, "sst2"), run_dir, extra_callbacks=[PreemptAt(5)])
    assert [(r["step"], r["split"]) for r in _evaluations(run_dir)] == [
        (2, "validation"), (2, "train"), (4, "validation"), (4, "train")]
    before = _evaluations(run_dir)[:2]
    result = run_training(spec_for(train, "sst2"), run_dir)
    assert result["train"]["resumed_from_step"] == 3
    records = _evaluations(run_dir)
    # step 4's evaluation was after the checkpoint: dropped and redone on the resumed weights; step 2's kept as is
    assert [(r["step"], r["split"]) for r in records] == [
        (step, split) for step in (2, 4, 6) for split in ("validation", "train")]
    assert records[:2] == before
    assert all(set(r["metrics"]) == {"accuracy", "loss"} for r in records)
    assert records[0]["epoch"] == pytest.approx(2 * 4 / 48)  # 4 rows a step, 48 rows an epoch
    assert result["early_stopping"] is None
    # the time the kept evaluations took (training's runtime includes it)
    assert result["eval"]["during_training_s"] == pytest.approx(sum(r["runtime_s"] for r in records))
    # the last evaluation is of the final weights: the result's figures
    assert records[-2]["metrics"]["accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    assert records[-2]["metrics"]["loss"] == pytest.approx(result["eval"]["loss"], rel=1e-5)


def test_early_stopping_stops_after_its_patience_and_reports_the_best_checkpoint(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any
) -> None:
    # min_delta of 50 points: no evaluation after the first counts as an improvement, so with
    # patience 2 training stops at the third evaluation, step 6 of 12; packed rows (the evaluation
    # gathers per-feature logits back) change nothing of it
    train = tiny(**SST2, max_steps=12, eval_steps=2, padding="packed",
                 early_stopping={"metric": "accuracy", "patience": 2, "min_delta": 50})
    run_dir = run_dir_for("stop")
    result = run_training(spec_for(train, "stop"), run_dir)
    records = [r for r in _evaluations(run_dir) if r["split"] == "validation"]
    assert [r["step"] for r in records] == [2, 4, 6]
    outcome = result["early_stopping"]
    assert outcome["stopped_early"] is True and outcome["stopped_at_step"] == result["train"]["steps"] == 6
    assert not any("stopped at step" in warning for warning in result["warnings"])
    best = next(r for r in records if r["step"] == outcome["best_step"])
    # the Trainer's best: the first evaluation, or a later one strictly better
    assert best["metrics"]["accuracy"] == max(r["metrics"]["accuracy"] for r in records)
    assert outcome["best_value"] == pytest.approx(best["metrics"]["accuracy"])
    # the reported figures are the best checkpoint's, evaluated again after training
    assert result["metrics"]["accuracy"] == pytest.approx(best["metrics"]["accuracy"])
    assert result["eval"]["loss"] == pytest.approx(best["metrics"]["loss"], rel=1e-5)
    checkpoints = sorted(path.name for path in run_dir.checkpoint_dir.iterdir())
    assert f"checkpoint-{outcome['best_step']}" in checkpoints  # kept by the rotation
    # a requeue during the final evaluation: no step more, the best weights evaluated again, no line repeated
    again = run_training(spec_for(train, "stop"), run_dir)
    assert again["train"]["steps"] == 6 and again["early_stopping"] == outcome
    assert again["metrics"] == pytest.approx(result["metrics"])
    assert again["eval"]["loss"] == pytest.approx(result["eval"]["loss"], rel=1e-5)
    assert [r for r in _evaluations(run_dir) if r["split"] == "validation"] == records


def test_squad_v2_curves_use_the_qa_post_processing(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any
) -> None:
    train = tiny(data={"synthetic": {"n_train": 120, "n_eval": 12, "seed": 0}}, max_steps=4, eval_steps=2,
                 train_eval_samples=6, early_stopping={"metric": "f1", "patience": 3})
    run_dir = run_dir_for("qa")
    result = run_training(spec_for(train, "qa"), run_dir)
    records = _evaluations(run_dir)
    assert [(r["step"], r["split"]) for r in records] == [(2, "validation"), (2, "train"), (4, "validation"),
                                                          (4, "train")]
    by_split = {r["split"]: r for r in records if r["step"] == 4}
    assert by_split["validation"]["metrics"]["total"] == 12 and by_split["train"]["metrics"]["total"] == 6
    assert "loss" not in by_split["validation"]["metrics"]  # QA evaluation features carry no answer positions
    assert result["eval"]["loss"] is None and "loss" in result["eval"]["unmeasured"]
    outcome = result["early_stopping"]
    assert outcome["stopped_early"] is False and outcome["best_step"] in (2, 4)
    best = next(r for r in records if r["split"] == "validation" and r["step"] == outcome["best_step"])
    assert result["metrics"]["f1"] == pytest.approx(best["metrics"]["f1"])
    assert json.loads((run_dir.path / "predictions.json").read_text())  # the final evaluation's files, not a curve's


def test_evaluation_knobs_map_to_training_arguments(tiny: Callable[..., TrainConfig], tmp_path: Any) -> None:
    from jobs.training_args import build_training_arguments

    plain = build_training_arguments(tiny(), tmp_path, cuda=False)
    assert plain.eval_strategy == "no" and not plain.load_best_model_at_end
    args = build_training_arguments(tiny(eval_steps=4, save_steps=10, early_stopping={"metric": "loss"}), tmp_path,
                                    cuda=False)
    assert (args.eval_strategy, args.eval_steps, args.save_strategy, args.save_steps) == ("steps", 4, "steps", 4)
    assert args.load_best_model_at_end and args.metric_for_best_model == "loss" and args.greater_is_better is False
    epoch = build_training_arguments(tiny(eval_strategy="epoch", early_stopping={"metric": "f1"}), tmp_path, cuda=False)
    assert (epoch.eval_strategy, epoch.save_strategy, epoch.greater_is_better) == ("epoch", "epoch", True)


class ConstantRegression(TrainerCallback):
    """Zeroes the regression head's weights after every step: each prediction is the bias, so STS-B's
    correlations are undefined (null) at every evaluation."""

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        import torch

        with torch.no_grad():
            model.classifier.weight.zero_()


def test_an_unmeasurable_metric_counts_as_no_improvement_and_untested_last_steps_are_named(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any
) -> None:
    # STS-B's pearson of constant predictions is null: HF's early stopping compared None with np.greater
    # (TypeError). Step 5 is no multiple of eval_steps: the Trainer evaluates the last step too, so no
    # trained step goes unevaluated (steps_after_last_evaluation 0, recorded, no warning about it)
    train = tiny(task="stsb", data={"synthetic": {"n_train": 32, "n_eval": 16, "seed": 0}}, max_steps=5,
                 eval_steps=2, early_stopping={"metric": "pearson", "patience": 3})
    run_dir = run_dir_for("stsb")
    result = run_training(spec_for(train, "stsb"), run_dir, extra_callbacks=[ConstantRegression()])
    records = [r for r in _evaluations(run_dir) if r["split"] == "validation"]
    assert [(r["step"], r["metrics"]["pearson"]) for r in records] == [(2, None), (4, None), (5, None)]
    outcome = result["early_stopping"]
    assert outcome["unmeasured_steps"] == [2, 4, 5] and outcome["steps_after_last_evaluation"] == 0
    assert outcome["best_step"] is None and outcome["best_value"] is None and outcome["stopped_early"] is False
    assert result["train"]["steps"] == 5 and result["metrics"]["pearson"] is None
    warnings = "\n".join(result["warnings"])
    assert "early_stopping: pearson could not be measured at step(s) 2, 4, 5 (null in metrics.jsonl)" in warnings
    assert "after the last evaluation" not in warnings


def test_early_stopping_warns_of_steps_after_the_last_evaluation() -> None:
    from jobs.curves import early_stopping_warnings

    outcome = {"metric": "accuracy", "best_step": 4, "unmeasured_steps": [], "steps_after_last_evaluation": 3}
    assert early_stopping_warnings(outcome) == [
        ("early_stopping: the last 3 step(s) came after the last evaluation and were never evaluated; step 4's "
         "weights were reported (make max_steps a multiple of eval_steps to use them)")]
