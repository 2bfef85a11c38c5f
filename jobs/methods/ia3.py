"""(IA)^3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning"): one learned vector a target module rescales its activations (the
``ia3.feedforward_modules`` on their input, the other targets on their output); the base is
frozen and the new task head stays fully trainable (peft's ``modules_to_save``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobs.contract import TrainConfig
from jobs.methods.base import Adapter, Method, joined_targets, require_targets, section

if TYPE_CHECKING:
    import torch


class IA3Method(Method):
    name = "ia3"
    config_field = "ia3"
    order = 10  # an adapter: wraps the model first (alone: jobs.contract.static_conflicts)
    freezes_base = True

    def apply(self, model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
        """The model wrapped by peft with IA3 vectors. Raises ValueError naming every target that
        matches no module."""
        from peft import IA3Config as PeftIA3Config
        from peft import get_peft_model

        assert train.ia3 is not None  # guarded by applies()
        require_targets(model, train, "ia3.target_modules", train.ia3.target_modules, all_linear=False)
        config = PeftIA3Config(target_modules=list(train.ia3.target_modules),
                               feedforward_modules=list(train.ia3.feedforward_modules), modules_to_save=list(heads))
        return get_peft_model(model, config)

    def describe(self, train: Mapping[str, Any]) -> str | None:
        ia3 = section(train, "ia3")
        if ia3 is None:
            return None
        targets = ia3.get("target_modules")
        return f"IA3 on {joined_targets(targets)}" if targets else "IA3"

    def label(self, train: Mapping[str, Any]) -> str | None:
        return "IA3" if section(train, "ia3") is not None else None

    def adapter(self, train: TrainConfig) -> Adapter | None:
        if train.ia3 is None:
            return None
        return Adapter(targets=train.ia3.target_modules, scaled_on_input=train.ia3.feedforward_modules)


IA3 = IA3Method()
