"""(IA)^3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning"): one learned vector a target module rescales its activations (the
``ia3.feedforward_modules`` on their input, the other targets on their output); the base is
frozen and the new task head stays fully trainable (peft's ``modules_to_save``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobs.contract import TrainConfig
from jobs.methods.base import Adapter, Method, placed_targets, require_targets, section, targets_words
from jobs.methods.placement import FEEDFORWARD_ROLE, PRESETS

if TYPE_CHECKING:
    import torch


class IA3Method(Method):
    name = "ia3"
    config_field = "ia3"
    order = 10  # an adapter: wraps the model first (alone: jobs.contract.static_conflicts)
    freezes_base = True

    def apply(self, model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
        """The model wrapped by peft with IA3 vectors on the targets, or on the modules ``ia3.placement``
        resolves to (the FFN output's scaled on its input). Raises ValueError naming every target that
        matches no module, or why the placement does not resolve."""
        from peft import IA3Config as PeftIA3Config
        from peft import get_peft_model

        assert train.ia3 is not None  # guarded by applies()
        if train.ia3.placement is not None:
            placed = placed_targets(model, "ia3.placement", train.ia3.placement)
            targets = [name for names in placed.values() for name in names]
            feedforward = placed.get(FEEDFORWARD_ROLE, [])
        else:
            require_targets(model, train, "ia3.target_modules", train.ia3.target_modules, all_linear=False)
            targets, feedforward = list(train.ia3.target_modules), list(train.ia3.feedforward_modules)
        config = PeftIA3Config(target_modules=targets, feedforward_modules=feedforward, modules_to_save=list(heads))
        return get_peft_model(model, config)

    def describe(self, train: Mapping[str, Any]) -> str | None:
        ia3 = section(train, "ia3")
        if ia3 is None:
            return None
        return f"IA3 on {targets_words(ia3)}" if ia3.get("target_modules") or ia3.get("placement") else "IA3"

    def label(self, train: Mapping[str, Any]) -> str | None:
        ia3 = section(train, "ia3")
        if ia3 is None:
            return None
        return "IA3" + (f" ({ia3['placement']})" if ia3.get("placement") else "")

    def adapter(self, train: TrainConfig) -> Adapter | None:
        if train.ia3 is None:
            return None
        if train.ia3.placement is not None:  # the preset's roles (orchestrator/vram.py counts roles too)
            roles = PRESETS.get(train.ia3.placement, ())
            return Adapter(targets=roles, scaled_on_input=tuple(r for r in roles if r == FEEDFORWARD_ROLE))
        return Adapter(targets=train.ia3.target_modules, scaled_on_input=train.ia3.feedforward_modules)


IA3 = IA3Method()
