"""Adapter placement presets (``lora.placement``, ``ia3.placement``), resolved per architecture, torch-free.

A preset names roles of an encoder layer's linears; an architecture names the module that plays each
role, as a path below its layer (``<prefix>.layer.<N>.<path>``, the names of the installed
transformers' modeling files):

=========  ===========================  ==================
role       BERT, RoBERTa, ELECTRA, ...  DistilBERT
=========  ===========================  ==================
query      attention.self.query         attention.q_lin
key        attention.self.key           attention.k_lin
value      attention.self.value         attention.v_lin
attn_out   attention.output.dense       attention.out_lin
ffn_in     intermediate.dense           ffn.lin1
ffn_out    output.dense                 ffn.lin2
=========  ===========================  ==================

BERT's FFN output ``layer.N.output.dense`` and its attention output ``layer.N.attention.output.dense``
share the suffix ``output.dense`` (peft's list rule would adapt both), so a preset resolves to the
full module names of the model (:func:`resolve_modules`), one a layer and role, not to suffixes.
The presets cover the encoder layers only: the task head trains fully anyway (``modules_to_save``)
and BERT's pooler stays frozen, as with ``target_modules``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")  # the linears of an encoder layer
PRESETS: dict[str, tuple[str, ...]] = {
    "attn-qkv": ("query", "key", "value"),
    "attn-full": ("query", "key", "value", "attn_out"),
    "ffn-only": ("ffn_in", "ffn_out"),
    "all-linear": ROLES,
}
FEEDFORWARD_ROLE = "ffn_out"  # IA3 scales this role's input (peft's feedforward modules), the others' output

_BERT_LIKE = dict(zip(ROLES, ("attention.self.query", "attention.self.key", "attention.self.value",
                              "attention.output.dense", "intermediate.dense", "output.dense"), strict=True))
_DISTILBERT = dict(zip(ROLES, ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
                               "ffn.lin1", "ffn.lin2"), strict=True))
# role -> module path below the layer, by config.json model_type (MiniLM checkpoints are model_type bert).
PATHS_BY_TYPE: dict[str, dict[str, str]] = {
    "bert": _BERT_LIKE, "roberta": _BERT_LIKE, "xlm-roberta": _BERT_LIKE, "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE, "distilbert": _DISTILBERT,
}


class PlacementError(ValueError):
    """A preset that is unknown, or not defined for the model's architecture, or not found in the model."""


def preset_problem(key: str, preset: str, model_type: str | None) -> str | None:
    """Why ``preset`` cannot place adapters on a ``model_type`` model (None: unknown here), else None.

    ``key`` is the knob's path (``lora.placement``). The message names the value, the known presets
    and the architecture's module names."""
    known = f"known presets: {', '.join(PRESETS)}"
    if preset not in PRESETS:
        return f"{key} {preset!r} is not a placement preset; {known}"
    if model_type is None or model_type in PATHS_BY_TYPE:
        return None
    return (f"{key} {preset!r}: no placement presets for model_type {model_type!r} (defined for "
            f"{', '.join(PATHS_BY_TYPE)}; {known}); name its modules in target_modules instead")


def layer_paths(preset: str, model_type: str, key: str = "placement") -> dict[str, str]:
    """role -> module path below an encoder layer. Raises PlacementError (see :func:`preset_problem`)."""
    problem = preset_problem(key, preset, model_type)
    if problem is not None:
        raise PlacementError(problem)
    return {role: PATHS_BY_TYPE[model_type][role] for role in PRESETS[preset]}


def architecture_modules(model_type: str) -> str:
    """The architecture's role modules in words, for error messages: ``query=attention.q_lin, ...``."""
    paths = PATHS_BY_TYPE.get(model_type)
    return ", ".join(f"{role}={path}" for role, path in paths.items()) if paths else "none defined"


def resolve_modules(module_names: Iterable[str], preset: str, model_type: str,
                    key: str = "placement") -> dict[str, list[str]]:
    """role -> the model's full module names that play it, one an encoder layer, in layer order.

    ``module_names``: ``model.named_modules()``'s names. Raises PlacementError when the preset is not
    defined for ``model_type`` or a role is missing from some layer (a model whose names differ from
    the transformers modeling file this table was read from). Example (DistilBERT, ``attn-qkv``):
    ``{"query": ["distilbert.transformer.layer.0.attention.q_lin", ...], ...}``."""
    paths = layer_paths(preset, model_type, key)
    names = list(module_names)
    layers = sorted({int(m.group(1)) for n in names if (m := re.search(r"(?:^|\.)layer\.(\d+)\.", n))})
    found: dict[str, list[str]] = {}
    for role, path in paths.items():
        pattern = re.compile(r"(?:.*\.)?layer\.(\d+)\." + re.escape(path))
        matches = sorted((int(m.group(1)), n) for n in names if (m := pattern.fullmatch(n)))
        if not layers or [index for index, _ in matches] != layers:
            raise PlacementError(
                f"{key} {preset!r} ({model_type}): {role} ({path}) is in layers {[i for i, _ in matches]} "
                f"of the model, not in each of its layers {layers}; name the modules in target_modules instead")
        found[role] = [name for _, name in matches]
    return found
