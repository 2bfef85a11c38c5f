"""GLUE's three shapes learn: the packaged MiniLM, fine-tuned for a few dozen steps on generated
data (single sentence: CoLA; pair: MRPC; regression: STS-B), beats chance / correlates positively.
Each run is well under a minute on one CPU core."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.contract import TrainConfig
from jobs.trainer import run_training

pytestmark = [pytest.mark.train, pytest.mark.slow]


def _run(task: str, minilm_path: str, shared_cache: str, spec_for: Any, run_dir_for: Any, steps: int = 24,
         learning_rate: float = 4e-4) -> dict[str, Any]:
    train = TrainConfig(
        task=task, model_name_or_path=minilm_path,
        data={"synthetic": {"n_train": 480, "n_eval": 120, "seed": 0}, "cache_dir": shared_cache},
        max_seq_length=48, padding="dynamic", batch_size=8, eval_batch_size=60, learning_rate=learning_rate, warmup=0.1,
        max_steps=steps, logging_steps=10, save_steps=1000, dataloader_workers=0, seed=0,
    )
    result: dict[str, Any] = run_training(spec_for(train, task), run_dir_for(task))
    print(task, result["metrics"], f"{result['train']['runtime_s']:.0f} s of training")
    assert result["train"]["steps"] == steps
    return result


def test_single_sentence_cola_beats_chance(minilm_path: str, shared_cache: str, spec_for: Any,
                                           run_dir_for: Any) -> None:
    # wrong word forms are split into word pieces: a few more steps than a pair needs
    result = _run("cola", minilm_path, shared_cache, spec_for, run_dir_for, steps=40)
    metrics = result["metrics"]
    assert metrics["matthews_correlation"] >= 50 and metrics["accuracy"] >= 75, metrics  # chance: 0 and 50
    assert result["eval"]["num_classes"] == 2


def test_pair_mrpc_beats_chance(minilm_path: str, shared_cache: str, spec_for: Any, run_dir_for: Any) -> None:
    metrics = _run("mrpc", minilm_path, shared_cache, spec_for, run_dir_for)["metrics"]
    assert metrics["accuracy"] >= 75 and metrics["f1"] >= 70, metrics  # chance: 50


def test_regression_stsb_correlates(minilm_path: str, shared_cache: str, spec_for: Any, run_dir_for: Any) -> None:
    # a score from two sentences takes more steps than a yes / no
    metrics = _run("stsb", minilm_path, shared_cache, spec_for, run_dir_for, steps=60, learning_rate=2e-4)["metrics"]
    assert metrics["pearson"] >= 50 and metrics["spearman"] >= 50, metrics  # chance: 0
