"""``padding: packed`` trains and evaluates exactly as ``padding: dynamic``: the same loss at every logged step,
the same metrics and (SQuAD v2) the same predictions.json, on a tiny random BERT in fp32 with dropout off (the
only randomness left is the batch order, the same in both: no bucketing).

SQuAD v2's twin is dynamic padding with micro-batches of one feature and 4 accumulation steps, not batch 4:
transformers' QA loss takes the softmax over every position of the padded batch, the padding's logits
included, so with dynamic padding at batch > 1 a feature's loss depends on its batch's longest feature
(seen: 4.0395 against 4.0355 at step 2). Packing's loss is each feature's own (its softmax over its own
tokens), which is dynamic padding's at one feature a micro-batch. Classification reads [CLS] only, so SST-2
compares batch 4 with batch 4."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from jobs.contract import NBEST_PREDICTIONS_FILE, PREDICTIONS_FILE, RunDir, TrainConfig
from jobs.model import load_tokenizer
from jobs.packing import PackingError
from jobs.tasks import TASKS
from jobs.trainer import build_model, build_session, run_training

pytestmark = pytest.mark.train

# Span scores after 6 steps: the twins' float sums differ in order (accumulation against one batch), which
# Adam's normalised steps carry into the weights: seen 3e-4 apart; with the block mask off (features seeing
# each other) 4.3e-3.
SCORE_TOLERANCE = 1e-3
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
TASK_KNOBS: dict[str, dict[str, Any]] = {
    "squad_v2": {"null_score_threshold": 1e9},  # always a span: predictions.json compares texts, not only ""
    "sst2": {"task": "sst2", "data": {"synthetic": {"n_train": 96, "n_eval": 32, "seed": 0}}},
}


def _run(tiny: Callable[..., TrainConfig], spec_for: Any, run_dir: RunDir, padding: str,
         **knobs: Any) -> dict[str, Any]:
    train = tiny(padding=padding, precision="fp32", model_overrides=NO_DROPOUT, max_steps=6, **knobs)
    result = run_training(spec_for(train, run_dir.path.name), run_dir)
    losses = [json.loads(line)["loss"] for line in run_dir.metrics_path.read_text().splitlines()
              if "loss" in json.loads(line)]
    return {"result": result, "losses": losses}


# packing_attention varlen off the GPU runs the variable-length attention's per-segment path (the flash kernel
# itself is checked on a GPU: benchmarks/packing_probe.py --check-varlen) and says so in the result's warnings.
@pytest.mark.parametrize(("task", "attention"), [("squad_v2", None), ("sst2", None), ("squad_v2", "varlen")])
def test_packed_equals_dynamic(task: str, attention: str | None, tiny: Callable[..., TrainConfig], spec_for: Any,
                               run_dir_for: Callable[[str], RunDir]) -> None:
    dynamic_dir, packed_dir = run_dir_for(f"{task}-dynamic"), run_dir_for(f"{task}-packed-{attention}")
    one_by_one = {"batch_size": 1, "gradient_accumulation_steps": 4} if task == "squad_v2" else {}
    dynamic = _run(tiny, spec_for, dynamic_dir, "dynamic", **one_by_one, **TASK_KNOBS[task])
    packed = _run(tiny, spec_for, packed_dir, "packed", packing_row_len=128, packing_attention=attention,
                  **TASK_KNOBS[task])
    varlen_warnings = [w for w in packed["result"]["warnings"] if w.startswith("packing_attention: varlen")]
    assert len(varlen_warnings) == (attention == "varlen")
    assert len(dynamic["losses"]) == len(packed["losses"]) == 6
    for step, (a, b) in enumerate(zip(dynamic["losses"], packed["losses"]), start=1):
        assert math.isclose(a, b, rel_tol=1e-4), f"step {step}: dynamic loss {a}, packed {b}"
    assert dynamic["losses"][0] != dynamic["losses"][-1]  # it trained: equal curves are not two flat lines
    assert packed["result"]["train"]["samples"] == dynamic["result"]["train"]["samples"] == 6 * 4
    metrics = ("exact", "f1", "HasAns_f1", "NoAns_f1") if task == "squad_v2" else ("accuracy",)
    for name in metrics:
        assert packed["result"]["metrics"][name] == pytest.approx(dynamic["result"]["metrics"][name], abs=1e-9), name
    if task == "squad_v2":
        dynamic_answers = json.loads(next(dynamic_dir.path.rglob(PREDICTIONS_FILE)).read_text())
        packed_answers = json.loads(next(packed_dir.path.rglob(PREDICTIONS_FILE)).read_text())
        assert dynamic_answers and packed_answers == dynamic_answers
        assert any(answer for answer in dynamic_answers.values())  # some spans, not only "no answer"
        # The logits themselves: a random tiny model's are small, so features seeing each other (mask off)
        # moves them by a few 1e-3 without changing a loss by 1e-4 or an answer.
        dynamic_nbest = json.loads(next(dynamic_dir.path.rglob(NBEST_PREDICTIONS_FILE)).read_text())
        packed_nbest = json.loads(next(packed_dir.path.rglob(NBEST_PREDICTIONS_FILE)).read_text())
        assert packed_nbest.keys() == dynamic_nbest.keys()
        gaps = [abs(ours["score"] - theirs["score"]) for key, entries in dynamic_nbest.items()
                for ours, theirs in zip(packed_nbest[key], entries, strict=True)]
        assert max(gaps) < SCORE_TOLERANCE, f"n-best scores differ by up to {max(gaps):.2e}"


def test_model_without_packed_head_is_refused_before_training(tiny: Callable[..., TrainConfig],
                                                              run_dir_for: Callable[[str], RunDir],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    train = tiny(padding="packed")
    task = TASKS[train.task]
    model = build_model(train, task)
    monkeypatch.setattr(model.config, "model_type", "roberta")
    features = datasets.Dataset.from_dict({"input_ids": [[101, 102]], "start_positions": [0], "end_positions": [0]})
    with pytest.raises(PackingError, match="model_type 'roberta'.*padding: dynamic"):
        build_session(train, run_dir_for("refused"), model, load_tokenizer(train), task, features)


def test_packed_classification_trains_in_the_runs_mixed_precision(tiny: Callable[..., TrainConfig], spec_for: Any,
                                                                  run_dir_for: Callable[[str], RunDir],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The packed classification head calls the encoder below the model's forward (outside the autocast
    accelerate wraps it in): it must still run in the run's precision (bf16 here, on the CPU), not fp32."""
    import torch

    import jobs.trainer as trainer_module

    seen: set[torch.dtype] = set()
    real_build = trainer_module.build_session

    def build_and_watch(*args: Any, **kwargs: Any) -> Any:
        session = real_build(*args, **kwargs)
        query = next(module for name, module in session.trainer.model.named_modules() if name.endswith("query"))
        query.register_forward_hook(lambda _module, _inputs, output: seen.add(output.dtype))
        return session

    monkeypatch.setattr(trainer_module, "build_session", build_and_watch)
    train = tiny(padding="packed", precision="bf16", max_steps=2, packing_row_len=128, **TASK_KNOBS["sst2"])
    result = run_training(spec_for(train, "bf16-packed"), run_dir_for("bf16-packed"))
    assert result["train"]["samples"] > 0
    assert seen == {torch.bfloat16}
