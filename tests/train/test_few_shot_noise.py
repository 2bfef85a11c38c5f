"""A noisy few-shot SST-2 run trains on its subset and writes its sample files; N = 0 only evaluates."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from jobs.contract import NOISE_SAMPLE_FILE, SUBSET_FILE, TrainConfig
from jobs.trainer import run_training

pytestmark = pytest.mark.train

SST2 = {"synthetic": {"n_train": 120, "n_eval": 24, "seed": 0}}


def test_a_noisy_few_shot_run_trains_on_its_subset(tiny: Callable[..., TrainConfig], spec_for: Any,
                                                   run_dir_for: Any) -> None:
    noise = {"kind": "emoji_insertion", "rate": 0.3, "apply_to": ["train", "eval"]}
    train = tiny(task="sst2", data={**SST2, "max_train_samples": 16, "noise": noise}, max_steps=3)
    run_dir = run_dir_for("noisy")
    result = run_training(spec_for(train, "noisy"), run_dir)
    assert result["train"]["steps"] == 3 and result["zero_shot"] is False
    assert result["data"]["train_examples"] == 16 and result["data"]["train_features"] == 16
    subset = json.loads((run_dir.path / SUBSET_FILE).read_text())
    assert subset["selected"] == 16 and subset["strategy"] == "stratified:label" and subset["seed"] == 0
    assert len(subset["ids"]) == 16 and sum(subset["strata"].values()) == 16
    sample = json.loads((run_dir.path / NOISE_SAMPLE_FILE).read_text())
    assert sample["noise"]["kind"] == "emoji_insertion" and set(sample["splits"]) == {"train", "eval"}
    assert len(sample["sample"]) == 16 + 20  # every training row, 20 of the evaluation rows
    assert any(pair["original"] != pair["corrupted"] for pair in sample["sample"])
    assert result["data"]["noise"]["eval"]["changed"] > 0


def test_a_zero_shot_run_evaluates_without_training(tiny: Callable[..., TrainConfig], spec_for: Any,
                                                    run_dir_for: Any) -> None:
    train = tiny(task="sst2", data={**SST2, "max_train_samples": 0})
    run_dir = run_dir_for("zero")
    result = run_training(spec_for(train, "zero"), run_dir)
    assert result["zero_shot"] is True and result["train"]["steps"] == 0
    assert result["data"]["train_features"] == 0 and result["data"]["eval_examples"] == 24
    assert 0 <= result["metrics"]["accuracy"] <= 100
    assert not (run_dir.checkpoint_dir).exists() or not any(run_dir.checkpoint_dir.iterdir())
    assert json.loads((run_dir.path / SUBSET_FILE).read_text())["selected"] == 0
