"""Layer freezing: the embeddings (``freeze.embeddings``) and the lower ``freeze.layers`` encoder
layers stop training. Applied last, so that frozen layers stay frozen whatever was unfrozen
before."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobs.contract import TrainConfig
from jobs.methods.base import Method, section

if TYPE_CHECKING:
    import torch

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings\.")


def layer_index(name: str) -> int | None:
    """The encoder layer a parameter belongs to (``...layer.3.attention...`` -> 3)."""
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


class Freeze(Method):
    name = "freeze"
    config_field = "freeze"
    order = 30

    def applies(self, train: TrainConfig) -> bool:
        return train.freeze.embeddings or train.freeze.layers > 0

    def apply(self, model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
        """Raises ValueError when ``freeze.layers`` exceeds the model's layers."""
        indices = {index for name, _ in model.named_parameters() if (index := layer_index(name)) is not None}
        if train.freeze.layers > len(indices):
            raise ValueError(f"freeze.layers is {train.freeze.layers} but the model has {len(indices)} layers")
        for name, parameter in model.named_parameters():
            index = layer_index(name)
            if (index is not None and index < train.freeze.layers) or (
                train.freeze.embeddings and _EMBEDDINGS.search(name)
            ):
                parameter.requires_grad = False
        return model

    def describe(self, train: Mapping[str, Any]) -> str | None:
        freeze = section(train, "freeze") or {}
        words = ([f"lower {freeze['layers']} encoder layers frozen"] if freeze.get("layers") else []) + (
            ["embeddings frozen"] if freeze.get("embeddings") else [])
        return ", ".join(words) or None

    def label(self, train: Mapping[str, Any]) -> str | None:
        freeze = section(train, "freeze") or {}
        if freeze.get("layers") or freeze.get("embeddings"):
            return f"full, lower {freeze.get('layers', 0)} layers frozen"
        return None


FREEZE = Freeze()
