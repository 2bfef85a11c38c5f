"""Every knob that can run on a CPU builds and takes a couple of steps (tiny random BERT)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch

from jobs.contract import TrainConfig
from jobs.methods import method_names
from jobs.tasks import TASKS
from jobs.trainer import build_model, run_training

pytestmark = pytest.mark.train

KNOBS: dict[str, dict[str, Any]] = {
    "sdpa": {"attention": "sdpa"},
    "eager": {"attention": "eager"},
    "pad-max-length": {"padding": "max_length"},
    "pad-dynamic-multiple-of-8": {"padding": "dynamic", "pad_to_multiple_of": 8},
    "bucketing": {"padding": "dynamic", "bucketing": True},
    "bucketing-two-loader-workers": {"padding": "dynamic", "bucketing": True, "dataloader_workers": 2},
    "lora": {"lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}},
    "bitfit": {"bitfit": {"train_head": True}},
    "freeze": {"freeze": {"embeddings": True, "layers": 1}},
    "lora-8bit-base": {"quantization": {"bits": 8}, "lora": {"r": 4}},
    "qlora-4bit": {"quantization": {"bits": 4, "compute_dtype": "fp32"}, "lora": {"r": 4}},
    "adamw-8bit": {"optimizer": "adamw_8bit"},
    "adamw-fused-flat": {"optimizer": "adamw_fused", "weight_decay": 0.01},
    "gradient-checkpointing": {"gradient_checkpointing": True},
    "grad-accumulation-cosine-warmup": {"gradient_accumulation_steps": 2, "lr_scheduler": "cosine", "warmup": 0.5},
    "compile-aot-eager": {"compile": {"enabled": True, "backend": "aot_eager"}, "padding": "dynamic"},
    "compile-inductor-reduce-overhead-bucketed": {
        "compile": {"enabled": True, "mode": "reduce-overhead"}, "padding": "dynamic", "pad_to_multiple_of": 16,
        "bucketing": True, "optimizer": "adamw_fused"},
    "bf16-autocast": {"precision": "bf16"},
    "packed": {"padding": "packed", "packing_row_len": 128},
    "packed-lora-eager": {"padding": "packed", "lora": {"r": 4}, "attention": "eager"},
    "packed-sst2": {"padding": "packed", "task": "sst2", "data": {"synthetic": {"n_train": 64, "n_eval": 16, "seed": 0}}},
    "sst2": {"task": "sst2", "data": {"synthetic": {"n_train": 64, "n_eval": 16, "seed": 0}}},
}


@pytest.mark.parametrize("name", list(KNOBS))
def test_knob_trains_and_evaluates(name: str, tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any) -> None:
    if name in ("lora-8bit-base", "qlora-4bit", "adamw-8bit"):
        pytest.importorskip("bitsandbytes")
    train = tiny(**KNOBS[name])
    run_dir = run_dir_for(name)
    result = run_training(spec_for(train, name), run_dir)
    assert result["train"]["steps"] == result["train"]["planned_steps"] == 2
    assert result["train"]["samples"] == 2 * 4 * train.gradient_accumulation_steps
    assert result["train"]["tokens_per_s"] > 0
    assert 0 < result["params"]["trainable"] <= result["params"]["total"]
    metric = "accuracy" if train.task == "sst2" else "f1"
    assert 0.0 <= result["metrics"][metric] <= 100.0
    assert result["methods"] == method_names(train)
    heartbeat = json.loads(run_dir.heartbeat_path.read_text())
    assert heartbeat["state"] == "evaluating" and heartbeat["step"] == 2
    lines = [json.loads(line) for line in run_dir.metrics_path.read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(line["loss"] > 0 for line in lines)


def _trainable(train: TrainConfig) -> dict[str, torch.nn.Parameter]:
    model = build_model(train, TASKS[train.task])
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def test_bitfit_trains_biases_and_head_only(tiny: Callable[..., TrainConfig]) -> None:
    names = set(_trainable(tiny(bitfit={"train_head": True})))
    assert names and all(name.endswith(".bias") or name.startswith("qa_outputs.") for name in names)
    assert {"qa_outputs.weight", "qa_outputs.bias"} <= names
    assert "bert.encoder.layer.0.attention.self.query.bias" in names
    without_head = set(_trainable(tiny(bitfit={"train_head": False})))
    assert without_head and all(name.endswith(".bias") for name in without_head)
    assert "qa_outputs.weight" not in without_head


def test_lora_trains_adapters_and_the_head(tiny: Callable[..., TrainConfig]) -> None:
    names = set(_trainable(tiny(lora={"r": 4, "target_modules": ["query", "value"]})))
    assert any("lora_A" in name for name in names)
    assert all("lora_" in name or "qa_outputs.modules_to_save" in name for name in names)
    assert not any(".key." in name for name in names)


def test_freeze_stops_gradients_below_the_cut(tiny: Callable[..., TrainConfig]) -> None:
    train = tiny(freeze={"embeddings": True, "layers": 1})
    model = build_model(train, TASKS["squad_v2"])
    batch = {"input_ids": torch.randint(1000, 2000, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.long),
             "start_positions": torch.tensor([3, 0]), "end_positions": torch.tensor([4, 0])}
    model(**batch).loss.backward()
    for name, parameter in model.named_parameters():
        frozen = name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
        assert parameter.requires_grad is not frozen, name
        assert (parameter.grad is None) is frozen, name


def test_freeze_more_layers_than_the_model_has_is_an_error(tiny: Callable[..., TrainConfig]) -> None:
    with pytest.raises(ValueError, match="freeze.layers is 5 but the model has 2 layers"):
        build_model(tiny(freeze={"layers": 5}), TASKS["squad_v2"])


def test_profile_writes_kernel_table_and_trace(tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any) -> None:
    run_dir = run_dir_for("profiled")
    result = run_training(spec_for(tiny(profile=True, max_steps=6), "profiled"), run_dir)
    kernels = (run_dir.path / "kernels.csv").read_text().splitlines()
    assert kernels[0] == "name,calls,self_time_us,self_time_pct" and len(kernels) > 5
    assert not any(line.startswith("ProfilerStep") for line in kernels)
    assert json.loads((run_dir.path / "trace.json").read_text())["traceEvents"]
    assert result["profile"]["kernels"].endswith("kernels.csv")
