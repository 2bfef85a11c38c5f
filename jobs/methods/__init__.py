"""The fine-tuning methods, one module each, registered here in their order of application.

    model = load(..., **load_options(train, heads))     # e.g. a quantised base (QLoRA)
    model = apply_methods(model, train, heads)          # adapters, then BitFit, then freezing

A method is a :class:`jobs.methods.base.Method`: the TrainConfig section it reads, its order,
``apply`` (the worker), ``describe``/``label`` (collect's tables) and ``adapter`` (the VRAM
estimate). A new method is one module plus one line in ``METHODS`` and its config section in
:mod:`jobs.contract`. Importing this package imports no torch, transformers or peft: the login
node reads the labels from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobs.contract import TrainConfig
from jobs.methods.base import Adapter, Method
from jobs.methods.bitfit import BITFIT
from jobs.methods.freeze import FREEZE
from jobs.methods.ia3 import IA3
from jobs.methods.lora import LORA
from jobs.methods.qlora import QLORA

if TYPE_CHECKING:
    import torch

METHODS: tuple[Method, ...] = tuple(sorted((LORA, QLORA, IA3, BITFIT, FREEZE), key=lambda method: method.order))
FULL = "full"  # the method column of a run that trains every weight


def active(train: TrainConfig) -> list[Method]:
    """The methods ``train`` asks for, in the order they are applied."""
    return [method for method in METHODS if method.applies(train)]


def method_names(train: TrainConfig) -> list[str]:
    """The names of the methods ``train`` asks for, in order (result.json's ``methods``)."""
    return [method.name for method in active(train)]


def load_options(train: TrainConfig, heads: Sequence[str]) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments the methods need (a quantisation config)."""
    options: dict[str, Any] = {}
    for method in active(train):
        options.update(method.load_options(train, heads))
    return options


def apply_methods(model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
    """Apply every method the spec asks for, in order. Raises ValueError when nothing is left to train."""
    for method in active(train):
        model = method.apply(model, train, heads)
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise ValueError(f"nothing left to train after {method_names(train)}")
    return model


def describe_words(train: Mapping[str, Any]) -> list[str]:
    """Each method's words for collect's configuration column, in order (spec.json's ``train``)."""
    return [words for method in METHODS if (words := method.describe(train))]


def label(train: Mapping[str, Any]) -> str:
    """The method in a word or two: the first method's label by order, else ``full``."""
    return next((text for method in METHODS if (text := method.label(train))), FULL)


def adapter(train: TrainConfig) -> Adapter | None:
    """The adapter the run trains on a frozen base, if any (for the VRAM estimate)."""
    return next((found for method in active(train) if (found := method.adapter(train)) is not None), None)


def freezes_base(train: TrainConfig) -> bool:
    """Whether the base model's weights stop training (an adapter or BitFit)."""
    return any(method.freezes_base for method in active(train))
