"""Correctness guards: labels stay with their tokens in every batching mode; a NaN loss stops the run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from jobs.contract import TrainConfig
from jobs.failures import NonFiniteLossError, classify_exception
from jobs.model import load_tokenizer
from jobs.tasks import TASKS
from jobs.tasks.data import load_splits
from jobs.tasks.squad_v2.metric import normalize_answer
from jobs.trainer import build_model, build_session, run_training, train_session

pytestmark = pytest.mark.train

BATCHING = {
    "max-length": {"padding": "max_length"},
    "dynamic": {"padding": "dynamic"},
    "dynamic-multiple-of-8": {"padding": "dynamic", "pad_to_multiple_of": 8},
    "bucketing": {"padding": "dynamic", "bucketing": True},
    "bucketing-multiple-of-16": {"padding": "dynamic", "pad_to_multiple_of": 16, "bucketing": True},
}


def _squashed(text: str) -> str:
    return "".join(normalize_answer(text).split())


@pytest.mark.parametrize("mode", list(BATCHING))
def test_labels_point_at_the_answer_after_batching(mode: str, tiny: Callable[..., TrainConfig], run_dir_for: Any) -> None:
    """Decode every labelled span of every batch the Trainer will train on and compare it
    with the gold answer of the feature's own example (the seed study's A4 bug)."""
    train = tiny(**BATCHING[mode], max_seq_length=96, doc_stride=32, batch_size=8,
                 data={"synthetic": {"n_train": 200, "n_eval": 8, "seed": 3}})
    task = TASKS["squad_v2"]
    tokenizer = load_tokenizer(train)
    cache_dir = Path(train.data.cache_dir or "")
    features = task.prepare(train, tokenizer, cache_dir).train_features
    example_of = {tuple(row["input_ids"][: row["length"]]): row["example_id"] for row in features}
    splits = load_splits(train, cache_dir, task)
    gold = {row["id"]: row["answers"]["text"] for row in splits.train}
    session = build_session(train, run_dir_for(mode), build_model(train, task), tokenizer, task, features)
    seen, answered = 0, 0
    for batch in session.trainer.get_train_dataloader():
        mask, ids = batch["attention_mask"], batch["input_ids"]
        lengths = mask.sum(dim=1)
        if train.bucketing:
            assert int(lengths.max() - lengths.min()) <= max(16, int(lengths.max()) // 2)
        for row in range(ids.shape[0]):
            length = int(lengths[row])
            assert bool(mask[row, :length].all()) and not bool(mask[row, length:].any())
            example_id = example_of[tuple(ids[row, :length].tolist())]
            start, end = int(batch["start_positions"][row]), int(batch["end_positions"][row])
            seen += 1
            if start == 0:
                assert end == 0
                continue
            answered += 1
            assert 0 < start <= end < length
            span = tokenizer.decode(ids[row, start:end + 1])
            assert _squashed(span) in {_squashed(text) for text in gold[example_id]}, (span, gold[example_id])
    assert seen == len(features) and answered > len(features) // 5


def test_nan_learning_rate_stops_training(tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any) -> None:
    run_dir = run_dir_for("diverges")
    with pytest.raises(NonFiniteLossError) as caught:
        run_training(spec_for(tiny(learning_rate=1e10, max_steps=50), "diverges"), run_dir)
    assert classify_exception(caught.value)[0] == "nan_loss"
    assert caught.value.step < 50
    heartbeat = json.loads(run_dir.heartbeat_path.read_text())
    assert heartbeat["step"] < 50


def test_non_finite_loss_is_caught_at_the_step_it_happens(tiny: Callable[..., TrainConfig], run_dir_for: Any) -> None:
    """A NaN injected into the model's output at step 3 stops training at step 3."""
    train = tiny(max_steps=20, logging_steps=10)
    task = TASKS["squad_v2"]
    tokenizer = load_tokenizer(train)
    data = task.prepare(train, tokenizer, Path(train.data.cache_dir or ""))
    model = build_model(train, task)
    calls = {"n": 0}

    def poison(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 3 else output

    model.qa_outputs.register_forward_hook(poison)
    session = build_session(train, run_dir_for("nan"), model, tokenizer, task, data.train_features)
    with pytest.raises(NonFiniteLossError) as caught:
        train_session(session, resume=False)
    assert caught.value.step == 3
    assert session.trainer.state.global_step == 2  # step 3's update never happened
