"""Per-example scores (``per_example_scores: true``) and the teacher-chosen subset of ``data.select_from``.

Teacher side, :func:`write_scores`, after training and evaluation, before result.json (so a completed
teacher has whole scores): every training row it trained on is predicted by its final model (the best
one where ``early_stopping`` loads it back) and ``per_example_scores.json`` is written atomically:

    {"task", "model": "final"|"best", "step", "loss_unit": "nats", "rows": [
        {"index": row in the full training split, "id": the data set's id, "label", "loss": cross-entropy,
         "predicted": argmax class, "length": tokens}, ...]}

Student side, :func:`teacher_subset`, at start, before any data is read: the teacher run is checked as
init_from's source is (jobs/sources.py ``check_source_run``: recorded config hash, result.json), its
scores are read and :func:`jobs.selection.select_rows` picks the rows; selection.json records them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from transformers import Trainer

from jobs.contract import RunDir, RunSpec, read_json, write_json_atomic
from jobs.selection import ScoredRow, select_rows, selection_record
from jobs.sources import SourceError, check_source_run
from jobs.subset import Subset
from jobs.tasks import PreparedData, Task

logger = logging.getLogger(__name__)


def per_example_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy in nats of each row: ``logits`` (rows, classes), ``labels`` (rows,) class ids."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return log_norm - shifted[np.arange(len(labels)), labels]


def write_scores(trainer: Trainer, task: Task, data: PreparedData, run_dir: RunDir) -> int:
    """Score every training row with the trainer's model into per_example_scores.json; the rows scored."""
    features = data.train_features
    if len(features) == 0:
        raise ValueError("per_example_scores: true on a run that trains on no rows: there is nothing to score")
    output = trainer.predict(features.remove_columns([c for c in task.non_model_columns if c in features.column_names]))
    logits = np.asarray(output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions,
                        dtype=np.float64)
    labels = np.asarray(features["labels"], dtype=np.int64)
    losses = per_example_losses(logits, labels)
    splits = data.splits
    subset = splits.subset if splits is not None else None
    indices = subset.indices if subset is not None else list(range(len(features)))
    ids = splits.subset_ids if splits is not None and subset is not None else indices
    lengths = features["length"] if "length" in features.column_names else [None] * len(features)
    rows = [{"index": int(index), "id": row_id, "label": int(label), "loss": float(loss), "predicted": int(guess),
             "length": length}
            for index, row_id, label, loss, guess, length in zip(indices, ids, labels, losses, logits.argmax(axis=1),
                                                                 lengths)]
    write_json_atomic(run_dir.per_example_scores_path, {
        "task": task.name, "model": "best" if trainer.args.load_best_model_at_end else "final",
        "step": trainer.state.global_step, "loss_unit": "nats", "rows": rows})
    logger.info("per_example_scores: %d training rows scored", len(rows))
    return len(rows)


def teacher_subset(spec: RunSpec, run_dir: RunDir) -> Subset | None:
    """The rows ``data.select_from`` picks from the verified teacher's scores (selection.json written);
    None without one. Raises SourceError (failure reason ``source_unusable``) for an unusable teacher."""
    config, ref = spec.train.data.select_from, spec.source
    if config is None or ref is None or ref.key != "select_from":
        return None
    teacher = check_source_run(run_dir, ref)
    try:
        scores = read_json(teacher.per_example_scores_path)
        rows = [ScoredRow(int(r["index"]), r["label"], float(r["loss"])) for r in scores["rows"]]
        ids = {int(r["index"]): r.get("id") for r in scores["rows"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"teacher run {ref.run_name}: {teacher.per_example_scores_path.name} unreadable ({exc}); "
                          "it needs per_example_scores: true: submit it again with --force") from exc
    try:
        chosen = select_rows(rows, config, spec.train.seed)
    except ValueError as exc:
        raise SourceError(f"teacher run {ref.run_name}: {exc}") from exc
    teacher_info: dict[str, Any] = {"run_id": ref.run_id, "run_name": ref.run_name, "model": scores.get("model"),
                                    "step": scores.get("step"), "rows_scored": len(rows)}
    write_json_atomic(run_dir.selection_path, selection_record(
        chosen, config, spec.train.seed, teacher_info, [ids[row.index] for row in chosen]))
    strata: dict[str, int] = {}
    for row in chosen:
        strata[str(row.label)] = strata.get(str(row.label), 0) + 1
    return Subset(config.size, [row.index for row in chosen], spec.train.seed, f"select_from:{config.strategy}",
                  strata, source=ref.run_id)
