"""Load the tokenizer and the task model exactly as the run spec says.

* ``attention`` -> ``attn_implementation`` (``eager`` or ``sdpa``);
* ``random_init`` -> the config of ``model_name_or_path`` (plus ``model_overrides``)
  with fresh weights, for speed benchmarks and plumbing tests;
* the methods' load options (:func:`jobs.methods.load_options`): QLoRA's bitsandbytes 4-bit
  or 8-bit base, with the task head kept out of quantisation (:mod:`jobs.methods.qlora`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from jobs.contract import TrainConfig
from jobs.methods import load_options


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


def load_model(
    train: TrainConfig, model_class: Any, model_kwargs: dict[str, Any], head_modules: Sequence[str]
) -> PreTrainedModel:
    """The task model (``model_class`` is e.g. ``AutoModelForQuestionAnswering``)."""
    config = load_config(train, model_kwargs)
    options = load_options(train, head_modules)
    load_kwargs: dict[str, Any] = {"attn_implementation": train.attention, **options}
    if train.random_init and not options:
        return model_class.from_config(config, **load_kwargs)
    if train.random_init:  # a method's load options (quantisation) apply while loading weights
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
