"""Evaluation during training (``eval_strategy``) and early stopping.

The Trainer decides when to evaluate (``eval_steps`` steps or each epoch's end, HF's own
schedule) and calls :meth:`jobs.spec_trainer.SpecTrainer.evaluate`, which hands the work to a
:class:`CurveEvaluator`: the task's own prediction and scoring (QA post-processing included,
exactly the final evaluation's path) on the validation split and, with ``train_eval_samples``,
on a fixed sample of the training rows; each split becomes one ``EvalRecord`` line of
metrics.jsonl. The validation metrics go back to the Trainer as ``eval_<name>``, where
``early_stopping`` reads them (HF's ``metric_for_best_model``, ``load_best_model_at_end`` and
:class:`jobs.callbacks.ResumableEarlyStopping`).

Resume: an evaluation is in metrics.jsonl once. A resumed attempt repeats the steps after its
checkpoint, so :func:`drop_evaluations_after` first removes the evaluations written after the
checkpoint's step (they are redone, on the weights that continue); those up to it are kept.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.callbacks import ResumableEarlyStopping
from jobs.contract import (
    EvalRecord,
    RunDir,
    TrainConfig,
    append_jsonl,
    eval_records,
    read_jsonl,
    write_text_atomic,
)
from jobs.tasks import EvalOutput, PreparedData, Task

if TYPE_CHECKING:
    from transformers import Trainer, TrainerState

logger = logging.getLogger(__name__)

# The training-set sample is drawn with a fixed seed (whatever the run's seed) from the rows the run
# trains on: runs on the same training rows are scored on the same examples; with max_train_samples
# (a subset drawn per seed) or noise, each subset's sample is its own.
TRAIN_SAMPLE_SEED = 0
# Trainer.log keys of an evaluation's metrics (the measured ones: a null is left out): transformers'
# TensorBoard and W&B callbacks show ``eval_accuracy`` as eval/accuracy, ``sample_accuracy`` as
# train/sample_accuracy (the training sample's).
LOG_PREFIX = {"validation": "eval_", "train": "sample_"}


def train_sample(task: Task, data: PreparedData, train: TrainConfig, tokenizer: Any) -> PreparedData | None:
    """``train_eval_samples`` training rows (after subset and noise: what the model trains on), drawn
    with TRAIN_SAMPLE_SEED and tokenised as an evaluation split; None without ``train_eval_samples``.
    Raises ValueError when the raw training rows are not at hand."""
    if train.train_eval_samples is None:
        return None
    if data.splits is None:
        raise ValueError("train_eval_samples needs the raw training rows (PreparedData.splits)")
    import numpy

    rows = data.splits.train
    count = min(train.train_eval_samples, len(rows))
    if count < train.train_eval_samples:
        logger.warning("train_eval_samples %d: the training split has %d rows; all are evaluated",
                       train.train_eval_samples, len(rows))
    indices = sorted(numpy.random.default_rng(TRAIN_SAMPLE_SEED).choice(len(rows), size=count, replace=False).tolist())
    examples = rows.select(indices)
    features = task.tokenize(examples, tokenizer, train, training=False)
    return PreparedData(train_features=features, eval_examples=examples, eval_features=features)


class CurveEvaluator:
    """Evaluates the model being trained on the validation split (and the training sample); one
    metrics.jsonl line a split; returns the validation metrics."""

    def __init__(self, task: Task, data: PreparedData, train: TrainConfig, run_dir: RunDir,
                 sample: PreparedData | None) -> None:
        self.task, self.data, self.train, self.run_dir, self.sample = task, data, train, run_dir, sample

    def __call__(self, trainer: Trainer) -> dict[str, float]:
        """Evaluate now (at ``trainer.state.global_step``); the validation metrics, ``loss`` among them
        where the evaluation features carry labels (classification; not SQuAD v2's)."""
        state = trainer.state
        self.run_dir.write_heartbeat("evaluating", step=state.global_step, total_steps=state.max_steps,
                                     epoch=state.epoch)
        validation: dict[str, float] = {}
        logged: dict[str, float] = {}
        for split, data in (("validation", self.data), ("train", self.sample)):
            if data is None:
                continue
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as scratch:  # prediction files of the final evaluation stay as they are
                output = self.task.evaluate(trainer, data, self.train, Path(scratch), during_training=True)
            runtime_s = time.perf_counter() - started
            metrics = dict(output.metrics)
            if output.loss is not None:
                metrics["loss"] = output.loss
            record = EvalRecord(step=state.global_step, epoch=state.epoch, split=split,  # type: ignore[arg-type]
                                metrics=dict(metrics), time=time.time(), runtime_s=runtime_s)
            append_jsonl(self.run_dir.metrics_path, record.model_dump(mode="json"))
            if split == "validation":
                validation = metrics
            logged.update({f"{LOG_PREFIX[split]}{name}": float(value) for name, value in metrics.items()
                           if isinstance(value, (int, float)) and math.isfinite(value)})
        trainer.log(logged)  # TensorBoard / W&B (report_to); the run-dir callbacks ignore a log without "loss"
        self.run_dir.write_heartbeat("training", step=state.global_step, total_steps=state.max_steps,
                                     epoch=state.epoch)
        return validation


def loss_fields(evaluation: EvalOutput) -> dict[str, Any]:
    """The final evaluation's ``extra`` with its ``loss`` (early stopping on loss reports it), null and
    named in ``unmeasured`` where the evaluation features carry no labels (SQuAD v2)."""
    fields: dict[str, Any] = {**evaluation.extra, "loss": evaluation.loss}
    if evaluation.loss is None:
        fields["unmeasured"] = {**fields.get("unmeasured", {}),
                                "loss": "the evaluation features carry no labels (no loss to compute)"}
    return fields


def evaluation_time_s(run_dir: RunDir) -> float | None:
    """Seconds the evaluations during training took (the metrics.jsonl lines' runtime_s, every attempt's
    kept lines), None without any: the training's runtime_s and throughput include them."""
    if not run_dir.metrics_path.exists():
        return None
    times = [float(line["runtime_s"]) for line in read_jsonl(run_dir.metrics_path)
             if "split" in line and isinstance(line.get("runtime_s"), (int, float))]
    return sum(times) if times else None


def drop_evaluations_after(run_dir: RunDir, step: int) -> int:
    """Remove the evaluation lines of metrics.jsonl after ``step`` (the checkpoint a resumed attempt
    continues from); the file is replaced atomically. Returns how many were removed."""
    if not run_dir.metrics_path.exists():
        return 0
    lines = read_jsonl(run_dir.metrics_path)
    kept = [line for line in lines if "split" not in line or int(line.get("step", 0)) <= step]
    if len(kept) == len(lines):
        return 0
    write_text_atomic(run_dir.metrics_path, "".join(json.dumps(line) + "\n" for line in kept))
    logger.info("resumed at step %d: %d evaluation line(s) after it dropped from metrics.jsonl (redone)",
                step, len(lines) - len(kept))
    return len(lines) - len(kept)


def stopped_early(state: TrainerState) -> bool:
    """Whether early stopping ended the training of ``state`` (a checkpoint's or the live one)."""
    callbacks: Any = state.stateful_callbacks or {}  # a dict once loaded or saved
    stored = callbacks.get(ResumableEarlyStopping.__name__) if isinstance(callbacks, dict) else None
    if not isinstance(stored, dict):
        return False
    patience = stored.get("args", {}).get("early_stopping_patience")
    counter = stored.get("attributes", {}).get("early_stopping_patience_counter")
    return isinstance(patience, int) and isinstance(counter, int) and counter >= patience


def early_stopping_outcome(train: TrainConfig, trainer: Trainer, run_dir: RunDir) -> dict[str, Any] | None:
    """result.json's ``early_stopping`` (EarlyStoppingOutcome), or None without ``early_stopping``. The
    evaluations come from metrics.jsonl (every attempt's): those whose metric was null, and the steps
    trained after the last one (load_best_model_at_end never reports them)."""
    config = train.early_stopping
    if config is None:
        return None
    state = trainer.state
    best = state.best_global_step or None
    best_value = None if best is None or state.best_metric is None else float(state.best_metric)
    lines = read_jsonl(run_dir.metrics_path) if run_dir.metrics_path.exists() else []
    validation = [line for line in eval_records(lines) if line["split"] == "validation"]
    last = max((int(line["step"]) for line in validation), default=0)
    return {"metric": config.metric, "best_step": best,
            "best_value": best_value if best_value is None or math.isfinite(best_value) else None,
            "stopped_early": stopped_early(state) and state.global_step < state.max_steps, "stopped_at_step": state.global_step,
            "patience": config.patience, "min_delta": config.min_delta,
            "unmeasured_steps": [int(line["step"]) for line in validation
                                 if line["metrics"].get(config.metric) is None],
            "steps_after_last_evaluation": state.global_step - last}


def early_stopping_warnings(outcome: dict[str, Any] | None) -> list[str]:
    """result.json warnings of an ``early_stopping`` outcome: evaluations that could not be measured, and
    steps trained after the last evaluation, which the best checkpoint never includes."""
    if outcome is None:
        return []
    warnings = []
    if outcome["unmeasured_steps"]:
        warnings.append(f"early_stopping: {outcome['metric']} could not be measured at step(s) "
                        f"{', '.join(map(str, outcome['unmeasured_steps']))} (null in metrics.jsonl): counted as no "
                        "improvement")
    after = outcome["steps_after_last_evaluation"]
    if after > 0:
        reported = (f"step {outcome['best_step']}'s weights were reported" if outcome["best_step"] is not None
                    else "no evaluation was ever the best: the final weights were reported")
        warnings.append(f"early_stopping: the last {after} step(s) came after the last evaluation and were never "
                        f"evaluated; {reported} (make max_steps a multiple of eval_steps to use them)")
    return warnings
