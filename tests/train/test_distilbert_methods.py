"""DistilBERT (its own module names: q_lin, ffn.lin1, transformer.layer.N) with every method and every
placement preset, through the real trainer on a CPU: a tiny random-weight DistilBERT saved as a local model
(MiniLM's vocabulary), two steps on the generated SST-2 and SQuAD v2 data; only the preset's modules (and the
task head) train."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from jobs.contract import TrainConfig
from jobs.methods import method_names
from jobs.methods.placement import PRESETS
from jobs.tasks import TASKS
from jobs.trainer import build_model, run_training

pytestmark = pytest.mark.train

# Written out by hand from transformers' modeling_distilbert.py (not from jobs/methods/placement.py).
DISTILBERT_MODULES = {"attn-qkv": ["attention.q_lin", "attention.k_lin", "attention.v_lin"],
                      "attn-full": ["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"],
                      "ffn-only": ["ffn.lin1", "ffn.lin2"],
                      "all-linear": ["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
                                     "ffn.lin1", "ffn.lin2"]}
HEADS = {"sst2": ("pre_classifier", "classifier"), "squad_v2": ("qa_outputs",)}
ADAPTERS = {"lora": {"lora": {"r": 2, "alpha": 4}},
            "qlora": {"lora": {"r": 2, "alpha": 4}, "quantization": {"bits": 4, "compute_dtype": "fp32"}},
            "ia3": {"ia3": {}}}
SST2 = {"synthetic": {"n_train": 64, "n_eval": 16, "seed": 0}}


@pytest.fixture(scope="module")
def distilbert(tmp_path_factory: pytest.TempPathFactory, minilm_path: str, shared_cache: str) -> Callable[..., TrainConfig]:
    """``distilbert(task, **knobs)``: a tiny run of a random-weight DistilBERT (2 layers, dim 64) saved with
    MiniLM's tokenizer as a local model directory (weights included: QLoRA quantises them while loading).
    Every linear layer is at least 64 inputs wide: on a CPU with AVX512-BF16, bitsandbytes' 4-bit layers repack
    their weights for inference in blocks of 64 inputs and fail on narrower ones (RuntimeError "shape '[32, 0]'
    is invalid" at dim 32, seen on such a machine)."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    folder = tmp_path_factory.mktemp("tiny-distilbert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=2, hidden_dim=128,
                              max_position_embeddings=128)
    DistilBertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    def make(task: str, **knobs: Any) -> TrainConfig:
        data = {"synthetic": {"n_train": 120, "n_eval": 24, "seed": 0}} if task == "squad_v2" else SST2
        return TrainConfig(**{
            "task": task, "model_name_or_path": str(folder), "data": {**data, "cache_dir": shared_cache},
            "max_seq_length": 64, "doc_stride": 24, "batch_size": 4, "eval_batch_size": 16, "max_steps": 2,
            "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 1000, "dataloader_workers": 0, "seed": 0,
            **knobs})
    return make


def _trainable(train: TrainConfig) -> set[str]:
    model = build_model(train, TASKS[train.task])
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def _expected(method: str, preset: str, task: str) -> set[str]:
    """The trainable parameters of an adapter on the preset's modules of both layers, plus the head's copy."""
    weights = ["lora_A.default.weight", "lora_B.default.weight"] if method != "ia3" else ["ia3_l.default"]
    adapters = {f"base_model.model.distilbert.transformer.layer.{layer}.{module}.{weight}"
                for layer in (0, 1) for module in DISTILBERT_MODULES[preset] for weight in weights}
    heads = {f"base_model.model.{head}.modules_to_save.default.{kind}" for head in HEADS[task]
             for kind in ("weight", "bias")}
    return adapters | heads


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("method", list(ADAPTERS))
def test_adapter_on_preset_trains_only_its_modules(method: str, preset: str, distilbert: Callable[..., TrainConfig],
                                                   spec_for: Any, run_dir_for: Any) -> None:
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    knobs = {section: {**value, "placement": preset} if section in ("lora", "ia3") else value
             for section, value in ADAPTERS[method].items()}
    for task in ("sst2", "squad_v2"):
        assert _trainable(distilbert(task, **knobs)) == _expected(method, preset, task)
    # train on one task a preset, alternating, so that each method trains on both tasks
    task = ("sst2", "squad_v2")[list(PRESETS).index(preset) % 2]
    train = distilbert(task, **knobs)
    result = run_training(spec_for(train, f"{method}-{preset}"), run_dir_for(f"{method}-{preset}"))
    assert result["methods"] == method_names(train) == [method]
    assert result["train"]["steps"] == 2
    assert 0 < result["params"]["trainable"] < result["params"]["total"] / 4


@pytest.mark.parametrize("task", ["sst2", "squad_v2"])
def test_bitfit_and_freeze_resolve_distilberts_layers(task: str, distilbert: Callable[..., TrainConfig],
                                                      spec_for: Any, run_dir_for: Any) -> None:
    heads = HEADS[task]
    bitfit = _trainable(distilbert(task, bitfit={"train_head": True}))
    assert "distilbert.transformer.layer.1.ffn.lin2.bias" in bitfit
    assert "distilbert.transformer.layer.0.attention.q_lin.bias" in bitfit
    assert all(name.endswith(".bias") or name.split(".")[0] in heads for name in bitfit), sorted(bitfit)
    assert {f"{head}.weight" for head in heads} <= bitfit
    frozen = distilbert(task, freeze={"embeddings": True, "layers": 1})
    trainable = _trainable(frozen)
    assert not any(name.startswith(("distilbert.embeddings.", "distilbert.transformer.layer.0.")) for name in trainable)
    assert "distilbert.transformer.layer.1.attention.q_lin.weight" in trainable
    assert {f"{head}.weight" for head in heads} <= trainable
    with pytest.raises(ValueError, match="freeze.layers is 3 but the model has 2 layers"):
        _trainable(distilbert(task, freeze={"layers": 3}))
    for name, train in (("bitfit", distilbert(task, bitfit={})), ("freeze", frozen)):
        result = run_training(spec_for(train, name), run_dir_for(name))
        assert result["methods"] == [name] and result["train"]["steps"] == 2


NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0, "qa_dropout": 0.0}


@pytest.mark.parametrize("task", ["sst2", "squad_v2"])
def test_packed_rows_train_distilbert_with_a_placement(task: str, distilbert: Callable[..., TrainConfig],
                                                      spec_for: Any, run_dir_for: Any) -> None:
    """Packed DistilBERT with LoRA on a preset: SST-2's loss equals dynamic padding's at every step (no
    dropout); SQuAD v2's QA loss is not comparable at batch > 1 (README: padding: packed), so it only runs."""
    losses = {}
    for padding in ("packed", "dynamic") if task == "sst2" else ("packed",):
        train = distilbert(task, padding=padding, lora={"r": 2, "dropout": 0.0, "placement": "attn-full"},
                           model_overrides=NO_DROPOUT)
        run_dir = run_dir_for(f"{padding}-{task}")
        result = run_training(spec_for(train, f"{padding}-{task}"), run_dir)
        assert result["methods"] == ["lora"] and result["train"]["steps"] == 2
        losses[padding] = [json.loads(line)["loss"] for line in run_dir.metrics_path.read_text().splitlines()
                           if "loss" in json.loads(line)]
    if task == "sst2":
        assert len(losses["packed"]) == 2
        assert losses["packed"] == pytest.approx(losses["dynamic"], rel=1e-4)
