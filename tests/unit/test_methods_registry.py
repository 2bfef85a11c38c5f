"""The methods registry (jobs/methods/): importable on the login node without the training stack,
applied in today's order, and the one source of collect's method words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jobs import methods
from jobs.contract import TrainConfig
from orchestrator.collect.describe import describe, method

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = {"synthetic": {}}


def test_registry_and_labels_never_import_the_training_stack() -> None:
    code = ("import sys; from jobs import methods; from jobs.contract import TrainConfig; "
            "train = {'lora': {'r': 8, 'target_modules': ['query']}, 'bitfit': {}, 'freeze': {'layers': 2}}; "
            "words = methods.describe_words(train); label = methods.label(train); "
            "config = TrainConfig(lora={}, quantization={}, data={'synthetic': {}}); "
            "names = methods.method_names(config); adapter = methods.adapter(config); "
            "bad = [m for m in ('torch', 'transformers', 'peft', 'datasets', 'bitsandbytes') if m in sys.modules]; "
            "print(words, label, names, bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "['qlora'] []" in result.stdout


def test_methods_apply_in_todays_order() -> None:
    orders = [m.order for m in methods.METHODS]
    assert orders == sorted(orders)
    assert [m.name for m in methods.METHODS if m.name in ("lora", "qlora", "bitfit", "freeze")] == \
        ["lora", "qlora", "bitfit", "freeze"]
    train = TrainConfig(lora={}, bitfit={}, allow_bitfit_with_lora=True, freeze={"layers": 1}, data=SYNTHETIC)
    assert methods.method_names(train) == ["lora", "bitfit", "freeze"]
    quantised = TrainConfig(lora={}, quantization={"bits": 8}, data=SYNTHETIC)
    assert methods.method_names(quantised) == ["qlora"]
    assert methods.method_names(TrainConfig(freeze={"embeddings": True}, data=SYNTHETIC)) == ["freeze"]
    assert methods.method_names(TrainConfig(data=SYNTHETIC)) == []


def test_every_method_declares_a_trainconfig_field() -> None:
    for registered in methods.METHODS:
        assert registered.config_field in TrainConfig.model_fields, registered
    assert len({m.name for m in methods.METHODS}) == len(methods.METHODS)


def test_collect_words_are_the_registry_words() -> None:
    train = {"attention": "sdpa", "lora": {"r": 4, "target_modules": "query,key"}, "bitfit": {"train_head": True},
             "freeze": {"layers": 3, "embeddings": True}}
    assert methods.describe_words(train) == ["LoRA r=4 on query/key", "BitFit (biases only)",
                                            "lower 3 encoder layers frozen, embeddings frozen"]
    assert "LoRA r=4 on query/key, BitFit (biases only), lower 3 encoder layers frozen, embeddings frozen" \
        in describe(train)
    assert method(train) == "LoRA r=4"
    assert method({"bitfit": {}, "freeze": {"layers": 2}}) == "BitFit"
    assert method({"freeze": {"embeddings": True}}) == "full, lower 0 layers frozen"
    assert method({}) == "full"


def test_vram_adapter_comes_from_the_method() -> None:
    lora = methods.adapter(TrainConfig(lora={"r": 4, "dropout": 0.0}, data=SYNTHETIC))
    assert lora is not None and lora.parameters("query", 16, 16) == 4 * 32
    assert methods.adapter(TrainConfig(bitfit={}, data=SYNTHETIC)) is None
    assert methods.freezes_base(TrainConfig(bitfit={}, data=SYNTHETIC))
    assert not methods.freezes_base(TrainConfig(freeze={"layers": 2}, data=SYNTHETIC))
