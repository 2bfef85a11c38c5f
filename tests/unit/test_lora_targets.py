"""The worker's own check of lora.target_modules (where the login node could not read the
model's config): every unmatched name is refused before training, by peft's matching rule."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jobs.contract import TrainConfig
from jobs.methods.base import unmatched_targets
from jobs.methods.lora import add_lora as apply_lora

NAMES = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.value",
         "bert.encoder.layer.0.output.dense", "qa_outputs"]


def test_unmatched_targets_by_peft_rule() -> None:
    assert unmatched_targets(NAMES, ["query", "valu"]) == ["valu"]
    assert unmatched_targets(NAMES, ["self.query", "output.dense", "all-linear"]) == []
    assert unmatched_targets(NAMES, ["uery"]) == ["uery"]  # a suffix must start at a dot


def _tiny_bert() -> torch.nn.Module:
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    return transformers.BertForQuestionAnswering(config)


def test_worker_refuses_a_misspelt_target_before_training() -> None:
    train = TrainConfig(lora={"target_modules": ["query", "valu"]}, data={"synthetic": {}})
    with pytest.raises(ValueError, match=r"lora.target_modules: 'valu' match no module of bert-base-uncased"):
        apply_lora(_tiny_bert(), train, ["qa_outputs"])


def test_all_linear_reaches_peft_as_its_shorthand() -> None:
    train = TrainConfig(lora={"target_modules": "all-linear"}, data={"synthetic": {}})
    model = apply_lora(_tiny_bert(), train, ["qa_outputs"])
    adapted = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in model.named_parameters() if "lora_A" in name}
    assert {"query", "key", "value", "dense"} <= adapted
