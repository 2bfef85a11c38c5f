"""The two whole-model walks the transformers Trainer makes every training step, done cheaply.

Each step the Trainer calls ``model.train()`` (``training_step``) and ``model.zero_grad()``
(after the optimizer step). ``nn.Module.train`` recurses through every submodule and sets
``training`` through ``nn.Module.__setattr__`` (228 modules in a BERT-base, more with LoRA's
adapter layers); ``nn.Module.zero_grad`` walks every parameter through ``named_parameters``'
recursive generators. Under CUDA graphs, where a small batch's step is a few milliseconds, the
two walks were the largest host-side costs of a step in a cProfile of A5 at batch 8 on an H200
(benchmarks/README.md). Here, for one training run:

* ``train()`` (``mode=True``) returns at once when every module is already in training mode
  (checked over a module list taken once); otherwise, and for ``train(False)`` / ``eval()``, the
  module's own ``train`` runs. ``nn.Module.train`` and transformers' ``PreTrainedModel.train`` do
  nothing else when no module changes mode, so this is the same; a model with any other ``train``
  (peft's DoRA layers, say) keeps its own.
* ``zero_grad()`` (``set_to_none=True``, the Trainer's call) sets every parameter's ``.grad`` to
  None over a parameter list taken once: ``nn.Module.zero_grad`` exactly, without the walk. A model
  whose class overrides ``zero_grad`` keeps its own.

Both lists are taken when the walks are installed, at the run's first training step: modules or
parameters added later (nothing in a run adds any) would be missed, so :func:`uninstall` removes
the shortcuts when training ends.
"""

from __future__ import annotations

from typing import Any

import torch

_INSTALLED = "_orchestrate_step_walks"


def _plain_train_methods() -> tuple[Any, ...]:
    methods: list[Any] = [torch.nn.Module.train]
    try:
        from transformers.modeling_utils import PreTrainedModel
    except ImportError:  # transformers is a dependency of the trainer; the walks work without it
        return tuple(methods)
    methods.append(PreTrainedModel.train)
    return tuple(methods)


class StepWalks:
    """``train`` and ``zero_grad`` of ``model`` over lists taken once (see the module docstring)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.modules = list(model.modules())
        self.parameters = list(model.parameters())
        plain = _plain_train_methods()
        self.fast_train = all(getattr(type(module), "train", None) in plain for module in self.modules)
        self.fast_zero_grad = type(model).zero_grad is torch.nn.Module.zero_grad
        self._train = model.train
        self._zero_grad = model.zero_grad

    def train(self, mode: bool = True) -> torch.nn.Module:
        if mode is True and all(module.training for module in self.modules):
            return self.model
        return self._train(mode)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            self._zero_grad(set_to_none)
            return
        for parameter in self.parameters:
            if parameter.grad is not None:
                parameter.grad = None


def install(model: torch.nn.Module) -> StepWalks:
    """Give ``model`` (the object the Trainer calls ``train`` / ``zero_grad`` on) the cheap walks
    where they are exact; idempotent. Returns the installed :class:`StepWalks`."""
    walks = model.__dict__.get(_INSTALLED)
    if isinstance(walks, StepWalks):
        return walks
    walks = StepWalks(model)
    # object.__setattr__: past nn.Module's (and torch.compile's OptimizedModule's) own __setattr__
    object.__setattr__(model, _INSTALLED, walks)
    if walks.fast_train:
        object.__setattr__(model, "train", walks.train)
    if walks.fast_zero_grad:
        object.__setattr__(model, "zero_grad", walks.zero_grad)
    return walks


def uninstall(model: torch.nn.Module) -> None:
    """Give ``model`` back its own ``train`` and ``zero_grad``."""
    for name in (_INSTALLED, "train", "zero_grad"):
        model.__dict__.pop(name, None)
