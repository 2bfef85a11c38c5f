"""LoRA (Hu et al. 2021): low-rank adapters on ``lora.target_modules`` of a full-precision base;
the new task head stays fully trainable (peft's ``modules_to_save``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobs.contract import ALL_LINEAR, TrainConfig
from jobs.methods.base import Adapter, Method, placed_targets, require_targets, section, targets_words
from jobs.methods.placement import PRESETS

if TYPE_CHECKING:
    import torch


def add_lora(model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
    """The model wrapped by peft with LoRA adapters (its base frozen) on ``lora.target_modules`` or on the
    modules ``lora.placement`` resolves to for the model's architecture (their full names).

    Raises ValueError naming every target that matches no module, or why the placement does not resolve."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    assert train.lora is not None  # guarded by applies()
    if train.lora.placement is not None:
        targets: Any = [name for names in placed_targets(model, "lora.placement", train.lora.placement).values()
                        for name in names]
    else:
        require_targets(model, train, "lora.target_modules", train.lora.target_modules)
        targets = ALL_LINEAR if train.lora.target_modules == (ALL_LINEAR,) else list(train.lora.target_modules)
    config = PeftLoraConfig(
        r=train.lora.r,
        lora_alpha=train.lora.alpha,  # type: ignore[arg-type]  # peft annotates int, takes any number
        lora_dropout=train.lora.dropout,
        target_modules=targets,
        modules_to_save=list(heads),
    )
    return get_peft_model(model, config)


def lora_adapter(train: TrainConfig) -> Adapter | None:
    """LoRA's adapters for the VRAM estimate (plain or on a quantised base)."""
    if train.lora is None:
        return None
    placement = train.lora.placement
    targets = PRESETS.get(placement, ()) if placement is not None else train.lora.target_modules
    return Adapter(targets=targets, rank=train.lora.r, dropout=train.lora.dropout)


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
        return f"LoRA r={lora.get('r')} on {targets_words(lora)}"

    def label(self, train: Mapping[str, Any]) -> str | None:
        lora = section(train, "lora")
        if lora is None or section(train, "quantization") is not None:
            return None
        return f"LoRA r={lora.get('r')}" + (f" ({lora['placement']})" if lora.get("placement") else "")

    def adapter(self, train: TrainConfig) -> Adapter | None:
        return lora_adapter(train)


LORA = Lora()
