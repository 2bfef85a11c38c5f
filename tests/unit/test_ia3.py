"""IA3, the method added through the registry: its config section, its conflicts, its words in
collect's tables (through spec.json and the flattened columns) and its VRAM estimate."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import Config, run_values, spec_dict, write_run

from jobs import methods
from jobs.contract import TrainConfig, config_hash
from orchestrator import vram
from orchestrator.collect import collect

SYNTHETIC = {"synthetic": {}}
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 30522,
             "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2, "model_type": "bert"}


def test_ia3_defaults_are_peft_s_for_bert() -> None:
    ia3 = TrainConfig(ia3={}, data=SYNTHETIC).ia3
    assert ia3 is not None
    assert ia3.target_modules == ("key", "value", "output.dense") and ia3.feedforward_modules == ("output.dense",)
    assert methods.method_names(TrainConfig(ia3={}, freeze={"layers": 2}, data=SYNTHETIC)) == ["ia3", "freeze"]


def test_targets_alone_keep_the_feedforward_ones_they_name() -> None:
    # a matrix writing ia3: {target_modules: [key, value]} was refused for the default feed-forward module
    alone = TrainConfig(ia3={"target_modules": ["key", "value"]}, data=SYNTHETIC).ia3
    assert alone is not None and alone.feedforward_modules == ()
    with_ffn = TrainConfig(ia3={"target_modules": ["value", "output.dense"]}, data=SYNTHETIC).ia3
    assert with_ffn is not None and with_ffn.feedforward_modules == ("output.dense",)


def test_feedforward_modules_must_be_targeted() -> None:
    with pytest.raises(ValidationError, match=r"feedforward_modules 'intermediate.dense' not in target_modules"):
        TrainConfig(ia3={"target_modules": ["key"], "feedforward_modules": ["intermediate.dense"]}, data=SYNTHETIC)
    with pytest.raises(ValidationError, match="must name at least one module"):
        TrainConfig(ia3={"target_modules": [], "feedforward_modules": []}, data=SYNTHETIC)


@pytest.mark.parametrize("other", [{"lora": {}}, {"bitfit": {}}, {"quantization": {"bits": 4}, "lora": {}}])
def test_ia3_trains_alone(other: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=r"ia3 together with (lora|bitfit|quantization): train one method"):
        TrainConfig(ia3={}, data=SYNTHETIC, **other)


def test_a_new_knob_leaves_existing_run_ids_alone() -> None:
    # the hashes of these configs before ia3 existed: an unset ia3 is not hashed
    assert config_hash(TrainConfig(data=SYNTHETIC)) == "23d44044"
    assert config_hash(TrainConfig(lora={"r": 4}, freeze={"layers": 2})) == "a5665637"
    assert config_hash(TrainConfig(ia3={}, data=SYNTHETIC)) != config_hash(TrainConfig(data=SYNTHETIC))


def test_ia3_label_in_collect_tables(tmp_path: Path) -> None:
    experiment_dir = tmp_path / "ia3-study"
    full = Config("F1", 70.0, 66.0, 40.0, 5000, 9000, 3000)
    ia3 = Config("I1", 60.0, 55.0, 60.0, 2500, 3800, 1800, 66_000, train={"ia3": {}})
    for config in (full, ia3):
        for seed in (1, 2):
            spec = spec_dict("ia3-study", config, seed, None)
            write_run(experiment_dir / "runs", spec, "completed", run_values(config, seed))
    out_dir = tmp_path / "results"
    collect(experiment_dir, out_dir, formats=frozenset({"csv"}))
    configs = pd.read_csv(out_dir / "tables" / "configurations.csv", keep_default_na=False).set_index("id")
    assert "IA3 on key/value/output.dense" in configs.loc["I1", "configuration"]
    assert "IA3" not in configs.loc["F1", "configuration"]
    peft = pd.read_csv(out_dir / "tables" / "peft.csv", keep_default_na=False).set_index("id")
    assert peft.loc["I1", "method"] == "IA3" and peft.loc["F1", "method"] == "full"


def test_vram_counts_ia3_vectors() -> None:
    # per BERT-base layer: key and value scaled on their 768 outputs, attention output.dense on its 768
    # inputs, the FFN's output.dense on its 3072 inputs (peft's feed-forward rule), plus the QA head
    dims = vram.dims_from_config(BERT_BASE, {})
    assert isinstance(dims, vram.Dims)
    train = TrainConfig(ia3={}, data=SYNTHETIC)
    plan = vram._plan(train, dims)
    assert plan.trainable == 12 * (768 + 768 + 768 + 3072) + 2 * 768 + 2
    assert not any(plan.linears_train)
    ia3, lora = vram.estimate(train, BERT_BASE), vram.estimate(TrainConfig(lora={}, data=SYNTHETIC), BERT_BASE)
    full = vram.estimate(TrainConfig(data=SYNTHETIC), BERT_BASE)
    assert isinstance(ia3, vram.Estimate) and isinstance(lora, vram.Estimate) and isinstance(full, vram.Estimate)
    assert ia3.optimizer < lora.optimizer < full.optimizer / 100
    assert ia3.total_gib < full.total_gib
