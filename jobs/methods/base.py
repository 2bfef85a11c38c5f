"""What a fine-tuning method is: the base class every method module subclasses, torch-free.

A method reads one section of :class:`jobs.contract.TrainConfig` (``config_field``), is applied
in a fixed ``order`` after the model is loaded (``apply``), and names itself in collect's
tables (``describe`` for the configuration column, ``label`` for the method column). The
login node imports this module and the registry: torch, transformers and peft are imported
only inside ``apply`` and what it calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from jobs.contract import ALL_LINEAR, TrainConfig

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Adapter:
    """The trainable modules a method adds to a frozen base, as the login node's VRAM estimate
    (``orchestrator/vram.py``) counts them.

    ``rank`` set: low-rank matrices, ``rank * (in_features + out_features)`` parameters a target
    (LoRA). ``rank`` None: one scaling vector a target, over its input features for the
    targets in ``scaled_on_input`` and its output features otherwise (IA3)."""

    targets: tuple[str, ...]  # module names (leaf or dotted suffix), or ("all-linear",)
    rank: int | None = None
    scaled_on_input: tuple[str, ...] = ()
    dropout: float = 0.0  # on the adapter's input (LoRA)

    def parameters(self, target: str, in_features: int, out_features: int) -> int:
        """Trainable parameters the adapter adds to one ``in_features -> out_features`` linear."""
        if self.rank is not None:
            return self.rank * (in_features + out_features)
        return in_features if target in self.scaled_on_input else out_features

    def kept_bytes(self, target: str, in_features: int, out_features: int, autocast: bool) -> float:
        """Bytes a token the adapter keeps for backward on one linear (its weights' gradients).

        LoRA keeps its input (autocast's cast copy, or the dropout output) plus a 1-byte dropout
        mask; a scaling vector keeps the tensor it scales (the input or the base's output)."""
        c = 2 if autocast else 4
        if self.rank is not None:
            mask = 1 if self.dropout > 0 else 0
            return ((c if autocast or mask else 0) + mask) * in_features
        return c * (in_features if target in self.scaled_on_input else out_features)


class Method:
    """One fine-tuning method. Subclasses set the class attributes and override what they do.

    ``name``: the word result.json's ``methods`` lists; ``config_field``: the TrainConfig field
    it reads; ``order``: methods apply in ascending order (adapters wrap the model first, BitFit
    then leaves adapters trainable, freezing comes last so that frozen layers stay frozen);
    ``freezes_base``: the base model's weights stop training (adapters, BitFit)."""

    name: ClassVar[str]
    config_field: ClassVar[str]
    order: ClassVar[int]
    freezes_base: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"<method {self.name}: {self.config_field}, order {self.order}>"

    def applies(self, train: TrainConfig) -> bool:
        """Whether ``train`` asks for this method (by default: its section is set)."""
        return getattr(train, self.config_field) is not None

    def load_options(self, train: TrainConfig, heads: Sequence[str]) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained`` (e.g. a quantisation config): applied at load
        time, so before every ``apply``."""
        return {}

    def apply(self, model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
        """The model to train; ``heads`` are the task head's module names (kept trainable)."""
        raise NotImplementedError

    def describe(self, train: Mapping[str, Any]) -> str | None:
        """Words for collect's configuration column, or None when ``train`` does not use it.

        ``train`` is spec.json's ``train`` section as collect reads it back: defaults may be
        absent, and a list flattened into a column arrives as ``"a,b"``."""
        raise NotImplementedError

    def label(self, train: Mapping[str, Any]) -> str | None:
        """The method in a word or two for collect's method column (the first method, by order,
        with a label names the run), or None."""
        return None

    def adapter(self, train: TrainConfig) -> Adapter | None:
        """The trainable modules it adds, for the VRAM estimate; None: it adds none."""
        return None


def section(train: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """``train[key]`` when it is a set section (a mapping), else None."""
    value = train.get(key)
    return value if isinstance(value, Mapping) else None


def joined_targets(targets: Any) -> str:
    """``target_modules`` as ``query/value``: a list in spec.json, ``"query,value"`` once flattened."""
    if isinstance(targets, (list, tuple)):
        return "/".join(map(str, targets))
    return str(targets or "").replace(",", "/")


def targets_words(adapter: Mapping[str, Any]) -> str:
    """An adapter section's modules in words: its placement preset (``attn-qkv``), else its targets."""
    placement = adapter.get("placement")
    return str(placement) if placement else joined_targets(adapter.get("target_modules"))


def placed_targets(model: torch.nn.Module, key: str, preset: str) -> dict[str, list[str]]:
    """role -> the full module names of ``model`` that ``preset`` places adapters on (``key``: the knob's
    path). Raises ValueError naming the key, the value, the known presets and the architecture's modules."""
    from jobs.methods.placement import PlacementError, architecture_modules, resolve_modules

    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    try:
        return resolve_modules((name for name, _ in model.named_modules()), preset, model_type, key)
    except PlacementError as exc:
        raise ValueError(f"{exc}; {model_type or 'the model'}'s modules: "
                         f"{architecture_modules(model_type)}") from exc


def unmatched_targets(module_names: Iterable[str], targets: Sequence[str]) -> list[str]:
    """Those of ``targets`` that name no module, by peft's rule for a list of names: a
    target matches a module whose dotted name equals it or ends with ``.target``.
    ``all-linear`` always matches. Example: (["bert.encoder.layer.0.attention.self.query"],
    ["query", "valu"]) -> ["valu"]."""
    names = list(module_names)
    return [t for t in targets if t != ALL_LINEAR and not any(n == t or n.endswith("." + t) for n in names)]


def require_targets(model: torch.nn.Module, train: TrainConfig, key: str, targets: Sequence[str],
                    all_linear: bool = True) -> None:
    """Raise ValueError naming every target that matches no module of ``model`` (peft itself only
    fails when none matches, and would silently adapt fewer layers than asked); ``key`` is the
    knob's path, e.g. ``lora.target_modules``; ``all_linear``: the knob accepts ``all-linear``."""
    import torch

    unmatched = unmatched_targets((name for name, _ in model.named_modules()), targets)
    if unmatched:
        leaves = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))})
        raise ValueError(f"{key}: {', '.join(map(repr, unmatched))} match no module of "
                         f"{train.model_name_or_path}; its linear and embedding layers: {', '.join(leaves)}"
                         + (f" (or target_modules: {ALL_LINEAR})" if all_linear else ""))
