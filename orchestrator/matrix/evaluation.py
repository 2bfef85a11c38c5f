"""Submit-time checks of evaluation during training and early stopping (part of the preflight).

``eval_steps`` / ``eval_strategy`` / ``train_eval_samples`` / ``early_stopping`` that go together;
``early_stopping.metric`` among the task's quality metrics (``Task.curve_metrics``: never a count or
a threshold such as SQuAD v2's ``total`` or ``best_f1_thresh``); and, where the training rows are
known at submit (``preflight.training_rows``), a ``train_eval_samples`` above them and an
``eval_strategy: epoch`` whose first epoch ends after ``max_steps`` (no evaluation would run).
"""

from __future__ import annotations

import math

from jobs.contract import TrainConfig
from jobs.tasks import get_task
from orchestrator.matrix.problems import Problems, suggest


def evaluation_problems(train: TrainConfig, where: str, rows: int | None = None) -> Problems:
    """Every problem of ``train``'s evaluation knobs, keyed under ``where``; ``rows``: the training rows
    (after ``data.max_train_samples``) where known, for the checks that need them."""
    found: Problems = []
    strategy, steps = train.eval_strategy, train.eval_steps
    if steps is not None and strategy != "steps":
        found.append((f"{where}.eval_steps", (f"{steps} only applies to eval_strategy: steps (it is {strategy}): "
                                             "drop eval_steps or write eval_strategy: steps")))
    if strategy == "steps" and steps is None:
        found.append((f"{where}.eval_strategy", ("steps needs eval_steps: N (evaluate every N optimizer steps), "
                                                "or write eval_strategy: epoch")))
    if steps is not None and train.max_steps is not None and steps > train.max_steps:
        found.append((f"{where}.eval_steps", (f"{steps} is more than max_steps ({train.max_steps}): no evaluation "
                                             f"would run; lower eval_steps to at most {train.max_steps}")))
    if strategy is not None and train.data.max_train_samples == 0:
        key = "eval_steps" if steps is not None else "eval_strategy"  # the knob the user most likely wrote
        shown = steps if steps is not None else strategy
        found.append((f"{where}.{key}", (f"{shown}: data.max_train_samples 0 is a zero-shot run that does not "
                                        f"train: set {key}: null on this run (or drop it)")))
    for key, value in (("train_eval_samples", train.train_eval_samples), ("early_stopping", train.early_stopping)):
        if value is not None and strategy is None:
            found.append((f"{where}.{key}", ("needs evaluation during training: add eval_steps: N or "
                                            f"eval_strategy: epoch, or drop {key}")))
    metrics = list(get_task(train.task).curve_metrics)
    if train.early_stopping is not None and train.early_stopping.metric not in metrics:
        metric = train.early_stopping.metric
        found.append((f"{where}.early_stopping.metric",
                      (f"{metric!r} is not a validation metric of task {train.task}: write one of "
                      f"{', '.join(metrics)}{suggest(metric, metrics)}")))
    return found + (row_problems(train, where, rows) if rows else [])


def row_problems(train: TrainConfig, where: str, rows: int) -> Problems:
    """``train_eval_samples`` above the ``rows`` the run trains on; ``eval_strategy: epoch`` with a
    ``max_steps`` that ends before the first epoch does."""
    found: Problems = []
    samples = train.train_eval_samples
    if samples is not None and samples > rows:
        found.append((f"{where}.train_eval_samples", (f"{samples} is more than the {rows} training rows the run "
                                                     f"trains on: lower it to at most {rows}")))
    if train.eval_strategy == "epoch" and train.max_steps is not None and train.data.max_train_samples != 0:
        # a lower bound: SQuAD's long contexts make more features than rows, never fewer
        epoch_steps = math.ceil(math.ceil(rows / train.batch_size) / train.gradient_accumulation_steps)
        if train.max_steps < epoch_steps:
            found.append((f"{where}.eval_strategy", (
                f"epoch: max_steps {train.max_steps} ends before the first epoch does (at least {epoch_steps} "
                f"optimizer steps: {rows} training rows, batch_size {train.batch_size}, gradient_accumulation_steps "
                f"{train.gradient_accumulation_steps}), so no evaluation would run; write eval_steps: N (at most "
                f"{train.max_steps}) or raise max_steps to at least {epoch_steps}")))
    return found
