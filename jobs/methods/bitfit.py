"""BitFit (Ben Zaken et al. 2022): train the biases only, plus the task head when
``bitfit.train_head``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobs.contract import TrainConfig
from jobs.methods.base import Method, section

if TYPE_CHECKING:
    import torch


def is_head_parameter(name: str, heads: Sequence[str]) -> bool:
    """A parameter of the task head (and, under peft, its trainable copy, not the original)."""
    dotted = f".{name}"
    return "original_module" not in name and any(f".{head}." in dotted for head in heads)


class BitFit(Method):
    name = "bitfit"
    config_field = "bitfit"
    order = 20  # after the adapters, whose weights it leaves trainable
    freezes_base = True

    def apply(self, model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
        """Adapter weights already trainable (``lora_``) stay trainable: BitFit with LoRA is
        allowed only when the spec says so explicitly (``allow_bitfit_with_lora``)."""
        assert train.bitfit is not None  # guarded by applies()
        for name, parameter in model.named_parameters():
            parameter.requires_grad = (
                name.endswith(".bias")
                or (train.bitfit.train_head and is_head_parameter(name, heads))
                or ("lora_" in name and parameter.requires_grad)
            )
        return model

    def describe(self, train: Mapping[str, Any]) -> str | None:
        return "BitFit (biases only)" if section(train, "bitfit") is not None else None

    def label(self, train: Mapping[str, Any]) -> str | None:
        return "BitFit" if section(train, "bitfit") is not None else None


BITFIT = BitFit()
