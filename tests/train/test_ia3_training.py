"""IA3 through the real trainer on a CPU: only the IA3 vectors and the task head train, the loss
falls on the generated data, and the checkpoint holds the adapter (not the base weights)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from safetensors.torch import load_file

from jobs.contract import TrainConfig
from jobs.tasks import TASKS
from jobs.trainer import build_model, run_training

pytestmark = pytest.mark.train


def test_ia3_trains_only_its_vectors_and_the_head(tiny: Callable[..., TrainConfig]) -> None:
    model = build_model(tiny(ia3={}), TASKS["squad_v2"])
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    vectors = {name for name in trainable if ".ia3_l." in name}
    # 2 layers x (key, value, attention output.dense, output.dense)
    assert len(vectors) == 8, sorted(trainable)
    assert trainable - vectors == {"base_model.model.qa_outputs.modules_to_save.default.weight",
                                   "base_model.model.qa_outputs.modules_to_save.default.bias"}


def test_ia3_loss_falls_and_the_adapter_is_saved(tiny: Callable[..., TrainConfig], spec_for: Any,
                                                 run_dir_for: Any) -> None:
    train = tiny(ia3={}, max_steps=40, learning_rate=2e-2, save_steps=40, logging_steps=5)
    run_dir = run_dir_for("ia3")
    result = run_training(spec_for(train, "ia3"), run_dir)
    assert result["methods"] == ["ia3"]
    assert result["train"]["steps"] == 40
    assert result["params"]["trainable"] < result["params"]["total"] / 100
    losses = [json.loads(line)["loss"] for line in run_dir.metrics_path.read_text().splitlines()]
    # from chance (ln 64 for a start and an end over 64 tokens) to well below it
    assert losses[0] > 3.5 and sum(losses[-4:]) / 4 < 0.5 * losses[0], losses
    checkpoint = run_dir.checkpoint_dir / "checkpoint-40"
    assert (checkpoint / "adapter_config.json").is_file()
    assert json.loads((checkpoint / "adapter_config.json").read_text())["peft_type"] == "IA3"
    tensors = load_file(checkpoint / "adapter_model.safetensors")
    keys = set(tensors)
    vectors = [tensor for key, tensor in tensors.items() if ".ia3_l" in key]
    assert len(vectors) == 8 and any("qa_outputs" in key for key in keys), keys
    assert all(not bool((vector == 1).all()) for vector in vectors)  # moved from their initial ones
    assert not any("attention.self.query.weight" in key for key in keys)  # the frozen base is not saved
