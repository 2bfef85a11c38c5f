"""LoRA (Hu et al. 2021): low-rank adapters on ``lora.target_modules`` of a full-precision base;
the new task head stays fully trainable (peft's ``modules_to_save``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobs.contract import ALL_LINEAR, TrainConfig
from jobs.methods.base import Adapter, Method, joined_targets, require_targets, section

if TYPE_CHECKING:
    import torch


def add_lora(model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
    """The model wrapped by peft with LoRA adapters (its base frozen).

    Raises ValueError naming every target that matches no module."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    assert train.lora is not None  # guarded by applies()
    targets = train.lora.target_modules
    require_targets(model, train, "lora.target_modules", targets)
    config = PeftLoraConfig(
        r=train.lora.r,
        lora_alpha=train.lora.alpha,  # type: ignore[arg-type]  # peft annotates int, takes any number
        lora_dropout=train.lora.dropout,
        target_modules=ALL_LINEAR if targets == (ALL_LINEAR,) else list(targets),
        modules_to_save=list(heads),
    )
    return get_peft_model(model, config)


def lora_adapter(train: TrainConfig) -> Adapter | None:
    """LoRA's adapters for the VRAM estimate (plain or on a quantised base)."""
    if train.lora is None:
        return None
    return Adapter(targets=train.lora.target_modules, rank=train.lora.r, dropout=train.lora.dropout)


class Lora(Method):
    name = "lora"
    config_field = "lora"
    order = 10
    freezes_base = True

    def applies(self, train: TrainConfig) -> bool:
        return train.lora is not None and train.quantization is None

    def apply(self, model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
        return add_lora(model, train, heads)

    def describe(self, train: Mapping[str, Any]) -> str | None:
        lora = section(train, "lora")
        if lora is None or section(train, "quantization") is not None:
            return None
        return f"LoRA r={lora.get('r')} on {joined_targets(lora.get('target_modules'))}"

    def label(self, train: Mapping[str, Any]) -> str | None:
        lora = section(train, "lora")
        if lora is None or section(train, "quantization") is not None:
            return None
        return f"LoRA r={lora.get('r')}"

    def adapter(self, train: TrainConfig) -> Adapter | None:
        return lora_adapter(train)


LORA = Lora()
