"""A run's key configuration in words, derived from its knobs (spec.json ``train``).

``describe(train)`` gives e.g. "SDPA attention, torch.compile (inductor), dynamic
padding + length bucketing, LoRA r=8 on query/value, fp16"; knobs left at the
contract's defaults (learning rate, batch size, sequence length) are not repeated. The
fine-tuning methods' words come from their modules (:mod:`jobs.methods`), not from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs import methods
from jobs.contract import TrainConfig

_DEFAULTS = {name: info.default for name, info in TrainConfig.model_fields.items()}
_ATTENTION = {"eager": "eager attention", "sdpa": "SDPA attention"}
_OPTIMIZER = {"adamw": "AdamW", "adamw_fused": "fused AdamW", "adamw_8bit": "8-bit AdamW"}


def describe(train: Mapping[str, Any]) -> str:
    """The configuration in words, in the order a reader compares runs."""
    parts = [
        _ATTENTION.get(str(train.get("attention")), f"{train.get('attention')} attention"),
        _compile_words(train.get("compile")),
        _padding_words(train),
    ]
    parts += methods.describe_words(train)
    optimizer = train.get("optimizer", "adamw")
    if optimizer != "adamw":
        parts.append(_OPTIMIZER.get(str(optimizer), str(optimizer)))
    if train.get("gradient_checkpointing"):
        parts.append("gradient checkpointing")
    parts.append(str(train.get("precision", "fp32")))
    parts += _non_default_words(train)
    return ", ".join(part for part in parts if part)


def method(train: Mapping[str, Any]) -> str:
    """The fine-tuning method in a word or two (full, LoRA, QLoRA, BitFit, frozen layers...), from
    the methods registry (:mod:`jobs.methods`)."""
    return methods.label(train)


def _compile_words(compile_cfg: Any) -> str:
    if not isinstance(compile_cfg, dict) or not compile_cfg.get("enabled", True):
        return "no compile"
    mode = compile_cfg.get("mode", "default")
    extra = f", {mode}" if mode and mode != "default" else ""
    return f"torch.compile ({compile_cfg.get('backend', 'inductor')}{extra})"


def _padding_words(train: Mapping[str, Any]) -> str:
    if train.get("padding") == "packed":
        row_len = train.get("packing_row_len")
        return "packed rows" + (f" of {row_len} tokens" if row_len else "")
    if train.get("padding", "max_length") != "dynamic":
        return "pad to max length"
    words = "dynamic padding"
    if train.get("pad_to_multiple_of"):
        words += f" (multiple of {train['pad_to_multiple_of']})"
    return words + (" + length bucketing" if train.get("bucketing") else ", no bucketing")


def _non_default_words(train: Mapping[str, Any]) -> list[str]:
    words: list[str] = []
    for key, label in (("learning_rate", "lr"), ("batch_size", "batch"), ("max_seq_length", "max length")):
        value = train.get(key)
        if value is not None and value != _DEFAULTS.get(key):
            words.append(f"{label} {value:g}" if isinstance(value, float) else f"{label} {value}")
    if train.get("max_steps"):
        words.append(f"max {train['max_steps']} steps")
    return words


def data_words(train: Mapping[str, Any]) -> tuple[str, Any]:
    """The data knobs of a robustness or scaling study: ("char_deletion 0.1 on train+eval" or "none",
    data.max_train_samples or None for every row)."""
    found = train.get("data")
    data: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    noise = data.get("noise") if isinstance(data.get("noise"), Mapping) else None
    words = "none"
    if noise and noise.get("kind"):
        splits = noise.get("apply_to")
        if isinstance(splits, str) and "," in splits:  # a list flattened into a runs.csv cell: "train,eval"
            splits = splits.split(",")
        shown = "+".join(map(str, splits)) if isinstance(splits, (list, tuple)) else str(splits or "train+eval")
        words = f"{noise['kind']} {noise.get('rate')} on {shown}"
        if noise.get("seed") is not None:
            words += f" (seed {noise['seed']})"
    return words, data.get("max_train_samples")
