"""Teacher-scored selection on the CPU: a teacher writes every training row's loss; a student trains on
the hard rows it ranks (selection.json, train_subset.json); a teacher without scores is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from jobs import entrypoint
from jobs.contract import RunDir, SourceRef, TrainConfig
from jobs.scores import per_example_losses

pytestmark = pytest.mark.train


def _student(tiny: Callable[..., TrainConfig], spec_for: Any, run_dir: RunDir, strategy: str) -> RunDir:
    train = tiny(task="sst2", max_steps=2, data={"synthetic": {"n_train": 40, "n_eval": 16, "seed": 0},
                                                 "select_from": {"run": "T", "strategy": strategy, "size": 10}})
    ref = SourceRef(key="select_from", run_id="T-0", run_name="T", config_hash="0", take=None)
    run_dir.write_spec(spec_for(train, strategy).model_copy(update={"source": ref}))
    return run_dir


def test_teacher_scores_and_student_trains_on_its_hard_rows(tiny: Callable[..., TrainConfig], spec_for: Any,
                                                            run_dir_for: Any) -> None:
    teacher = tiny(task="sst2", max_steps=4, per_example_scores=True,
                   data={"synthetic": {"n_train": 40, "n_eval": 16, "seed": 0}})
    teacher_dir = run_dir_for("T-0")
    teacher_dir.write_spec(spec_for(teacher, "T"))
    entrypoint.run(str(teacher_dir.path))
    scores = json.loads(teacher_dir.per_example_scores_path.read_text())
    assert scores["model"] == "final" and scores["step"] == 4 and scores["loss_unit"] == "nats"
    rows = scores["rows"]
    assert [r["index"] for r in rows] == list(range(40)) and all(r["loss"] > 0 and r["length"] > 0 for r in rows)

    student_dir = _student(tiny, spec_for, run_dir_for("hard-0"), "hard")
    result = entrypoint.run(str(student_dir.path))
    assert result["data"]["train_examples"] == 10 and result["data"]["train_subset"]["selected"] == 10
    assert result["data"]["train_subset"]["source_run_id"] == "T-0"
    assert result["initial_model"]["model_name_or_path"]  # it started from the base model, not the teacher
    chosen = json.loads(student_dir.selection_path.read_text())["rows"]
    subset = json.loads(student_dir.subset_path.read_text())
    assert subset["indices"] == [r["index"] for r in chosen] and subset["strategy"] == "select_from:hard"
    for label in (0, 1):  # the 5 highest losses of each label, nothing else
        losses = sorted((r["loss"] for r in rows if r["label"] == label), reverse=True)
        assert sorted((r["loss"] for r in chosen if r["label"] == label), reverse=True) == losses[:5]

    bare = tiny(task="sst2", max_steps=1, data={"synthetic": {"n_train": 40, "n_eval": 16, "seed": 0}})
    teacher_dir.per_example_scores_path.unlink()  # a teacher without scores: refused before any training
    teacher_dir.write_spec(spec_for(bare, "T"))
    lost = _student(tiny, spec_for, run_dir_for("lost-0"), "easy")
    with pytest.raises(entrypoint.WorkerFailed):
        entrypoint.run(str(lost.path))
    failure = lost.read_failure()
    assert failure is not None and failure.reason == "source_unusable"
    assert "per_example_scores.json unreadable" in failure.message


def test_per_example_losses_are_cross_entropy() -> None:
    import torch

    logits = np.array([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]])
    labels = np.array([0, 1, 0])
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels), reduction="none")
    assert per_example_losses(logits, labels) == pytest.approx(expected.numpy())
