"""Load the tokenizer and the task model exactly as the run spec says.

* ``attention`` -> ``attn_implementation`` (``eager`` or ``sdpa``);
* ``random_init`` -> the config of ``model_name_or_path`` (plus ``model_overrides``)
  with fresh weights, for speed benchmarks and plumbing tests;
* ``quantization`` -> a bitsandbytes 4-bit (NF4/FP4) or 8-bit base, with the new task
  head kept out of quantisation (``llm_int8_skip_modules``): a quantised head fails at
  the first forward pass, and it must stay trainable anyway.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BitsAndBytesConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from jobs.contract import QuantizationConfig, TrainConfig

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_tokenizer(train: TrainConfig) -> PreTrainedTokenizerBase:
    """The fast tokenizer of ``model_name_or_path`` (offset mappings need a fast one)."""
    tokenizer = AutoTokenizer.from_pretrained(train.model_name_or_path, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"{train.model_name_or_path}: a fast tokenizer is needed (offset mappings for QA)")
    return tokenizer


def load_config(train: TrainConfig, model_kwargs: dict[str, Any]) -> PretrainedConfig:
    """The model config with the task's keywords (e.g. ``num_labels``) and the spec's overrides.

    An override that names no attribute of the config is an error, not a silent no-op.
    """
    config = AutoConfig.from_pretrained(train.model_name_or_path, **model_kwargs)
    unknown = sorted(key for key in train.model_overrides if not hasattr(config, key))
    if unknown:
        raise ValueError(f"model_overrides: {', '.join(unknown)} not in the config of {train.model_name_or_path}")
    for key, value in train.model_overrides.items():
        setattr(config, key, value)
    return config


def quantization_config(quant: QuantizationConfig, skip_modules: Sequence[str]) -> BitsAndBytesConfig:
    """bitsandbytes settings for a 4-bit or 8-bit base, leaving ``skip_modules`` unquantised."""
    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip_modules))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=TORCH_DTYPES[quant.compute_dtype],
        llm_int8_skip_modules=list(skip_modules),
    )


def load_model(
    train: TrainConfig, model_class: Any, model_kwargs: dict[str, Any], head_modules: Sequence[str]
) -> PreTrainedModel:
    """The task model (``model_class`` is e.g. ``AutoModelForQuestionAnswering``)."""
    config = load_config(train, model_kwargs)
    load_kwargs: dict[str, Any] = {"attn_implementation": train.attention}
    if train.random_init and train.quantization is None:
        return model_class.from_config(config, **load_kwargs)
    if train.quantization is not None:
        load_kwargs["quantization_config"] = quantization_config(train.quantization, head_modules)
    if train.random_init:
        # bitsandbytes quantises while loading weights: give it random weights to load.
        with tempfile.TemporaryDirectory(prefix="random-init-") as folder:
            model_class.from_config(config).save_pretrained(folder)
            return model_class.from_pretrained(folder, **load_kwargs)
    return model_class.from_pretrained(train.model_name_or_path, config=config, **load_kwargs)


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable and total parameters; a 4-bit parameter packs two values a byte."""
    trainable = total = 0
    for parameter in model.parameters():
        count = parameter.numel() * (2 if type(parameter).__name__ == "Params4bit" else 1)
        total += count
        if parameter.requires_grad:
            trainable += count
    return {"trainable": trainable, "total": total}


def present_modules(model: torch.nn.Module, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that are the last component of some submodule's name."""
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [name for name in names if name in leaves]
