"""THE TRAINER LEARNS: the packaged MiniLM, fine-tuned on generated SQuAD v2 data on a CPU,
goes from chance to a high F1 (about 2 minutes on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.contract import RunDir, TrainConfig
from jobs.model import load_tokenizer
from jobs.tasks import TASKS
from jobs.tasks.squad_v2.synthetic import generate_squad_v2
from jobs.trainer import build_model, build_session, run_training

pytestmark = [pytest.mark.train, pytest.mark.slow]


def _short_examples(tokenizer: Any, n: int, split: str, max_tokens: int) -> list[dict[str, Any]]:
    """Generated examples whose question + context fit in one window (fast on a CPU)."""
    kept = []
    for example in generate_squad_v2(6 * n, seed=7, split=split):
        if len(tokenizer(example["question"], example["context"])["input_ids"]) <= max_tokens:
            kept.append(example)
        if len(kept) == n:
            return kept
    raise AssertionError(f"only {len(kept)} short examples")


def _write(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_fine_tuning_minilm_raises_f1_far_above_the_untrained_model(
    minilm_path: str, tmp_path: Path, spec_for: Any, run_dir_for: Any
) -> None:
    probe = TrainConfig(model_name_or_path=minilm_path, data={"synthetic": {}})
    tokenizer = load_tokenizer(probe)
    train_file = _write(tmp_path / "train.jsonl", _short_examples(tokenizer, 800, "train", 100))
    eval_file = _write(tmp_path / "eval.jsonl", _short_examples(tokenizer, 100, "eval", 100))
    train = TrainConfig(
        model_name_or_path=minilm_path, data={"train_file": train_file, "validation_file": eval_file},
        max_seq_length=128, doc_stride=64, padding="dynamic", bucketing=True, batch_size=16, eval_batch_size=50,
        learning_rate=2e-4, warmup=0.1, max_steps=90, logging_steps=10, save_steps=1000, dataloader_workers=0, seed=1,
    )
    run_dir: RunDir = run_dir_for("learns")

    task = TASKS["squad_v2"]
    data = task.prepare(train, tokenizer, run_dir.path.parent.parent / "cache")
    untrained_session = build_session(train, run_dir, build_model(train, task), tokenizer, task, data.train_features)
    untrained = task.evaluate(untrained_session.trainer, data, train, tmp_path).metrics

    result = run_training(spec_for(train, "learns"), run_dir)
    trained = result["metrics"]
    print(f"untrained F1 {untrained['f1']:.1f} (HasAns {untrained['HasAns_f1']:.1f}), "
          f"trained F1 {trained['f1']:.1f} (HasAns {trained['HasAns_f1']:.1f}, NoAns {trained['NoAns_f1']:.1f}), "
          f"{result['train']['runtime_s']:.0f} s of training")
    assert result["data"]["feature_cache_hits"] == {"train": True, "validation": True}
    assert result["train"]["steps"] == 90
    assert trained["f1"] >= untrained["f1"] + 40, (untrained, trained)
    assert trained["HasAns_f1"] >= 60 and trained["NoAns_f1"] >= 50, trained
    assert trained["best_f1"] >= trained["f1"]
    losses = [json.loads(line)["loss"] for line in run_dir.metrics_path.read_text().splitlines()]
    assert losses[-1] < losses[0] / 3
