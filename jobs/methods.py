"""Parameter-efficient and partial fine-tuning methods, composable and registered by name.

    for name in method_names(train):
        model = METHODS[name](model, train, heads)

Each method takes the model, the spec and the task head's module names and returns
the model to train. Order matters and is fixed by :func:`method_names`: adapters
first (``lora`` or ``qlora``, which wrap the model and freeze its base), then
``bitfit`` (which must not freeze the adapters), then ``freeze`` last, so that
frozen layers stay frozen whatever was unfrozen before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model, prepare_model_for_kbit_training

from jobs.contract import ALL_LINEAR, TrainConfig

Method = Callable[[torch.nn.Module, TrainConfig, Sequence[str]], torch.nn.Module]

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings\.")


def method_names(train: TrainConfig) -> list[str]:
    """The methods the spec asks for, in the order they are applied."""
    names: list[str] = []
    if train.lora is not None:
        names.append("qlora" if train.quantization is not None else "lora")
    if train.bitfit is not None:
        names.append("bitfit")
    if train.freeze.embeddings or train.freeze.layers > 0:
        names.append("freeze")
    return names


def unmatched_targets(module_names: Iterable[str], targets: Sequence[str]) -> list[str]:
    """Those of ``targets`` that name no module, by peft's rule for a list of names: a
    target matches a module whose dotted name equals it or ends with ``.target``.
    ``all-linear`` always matches. Example: (["bert.encoder.layer.0.attention.self.query"],
    ["query", "valu"]) -> ["valu"]."""
    names = list(module_names)
    return [t for t in targets if t != ALL_LINEAR and not any(n == t or n.endswith("." + t) for n in names)]


def apply_lora(model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
    """LoRA adapters on ``lora.target_modules``; the new task head stays fully trainable.

    Raises ValueError naming every target that matches no module (peft itself only fails
    when none matches, and would silently adapt fewer layers than asked)."""
    assert train.lora is not None  # guarded by method_names
    targets = train.lora.target_modules
    unmatched = unmatched_targets((name for name, _ in model.named_modules()), targets)
    if unmatched:
        leaves = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))})
        raise ValueError(f"lora.target_modules: {', '.join(map(repr, unmatched))} match no module of "
                         f"{train.model_name_or_path}; its linear and embedding layers: {', '.join(leaves)} "
                         f"(or target_modules: {ALL_LINEAR})")
    config = PeftLoraConfig(
        r=train.lora.r,
        lora_alpha=train.lora.alpha,  # type: ignore[arg-type]  # peft annotates int, takes any number
        lora_dropout=train.lora.dropout,
        target_modules=ALL_LINEAR if targets == (ALL_LINEAR,) else list(targets),
        modules_to_save=list(heads),
    )
    return get_peft_model(model, config)


def apply_qlora(model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
    """LoRA on a quantised (4-bit or 8-bit) base: prepare it for k-bit training first
    (layer norms in fp32, input gradients for checkpointing), then add the adapters."""
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train.gradient_checkpointing)
    return apply_lora(model, train, heads)


def is_head_parameter(name: str, heads: Sequence[str]) -> bool:
    """A parameter of the task head (and, under peft, its trainable copy, not the original)."""
    dotted = f".{name}"
    return "original_module" not in name and any(f".{head}." in dotted for head in heads)


def apply_bitfit(model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
    """BitFit: train the biases only (plus the task head when ``bitfit.train_head``).

    Adapter weights already trainable (``lora_``) stay trainable: BitFit with LoRA is
    allowed only when the spec says so explicitly.
    """
    assert train.bitfit is not None
    for name, parameter in model.named_parameters():
        parameter.requires_grad = (
            name.endswith(".bias")
            or (train.bitfit.train_head and is_head_parameter(name, heads))
            or ("lora_" in name and parameter.requires_grad)
        )
    return model


def layer_index(name: str) -> int | None:
    """The encoder layer a parameter belongs to (``...layer.3.attention...`` -> 3)."""
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def apply_freeze(model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
    """Freeze the embeddings (``freeze.embeddings``) and the lower ``freeze.layers`` layers."""
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


METHODS: dict[str, Method] = {
    "lora": apply_lora,
    "qlora": apply_qlora,
    "bitfit": apply_bitfit,
    "freeze": apply_freeze,
}


def apply_methods(model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
    """Apply every method the spec asks for, in order."""
    for name in method_names(train):
        model = METHODS[name](model, train, heads)
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise ValueError(f"nothing left to train after {method_names(train)}")
    return model
