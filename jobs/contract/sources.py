"""Runs built on runs: ``init_from`` (a matrix knob) and the resolved ``SourceRef`` of a run spec.

A run names another configuration of the same matrix as its source; the matrix expansion
(orchestrator/matrix/sources.py) pairs each of its runs with one run of the source, records that
run's identity in the dependent's spec (``RunSpec.source``) and folds its run id into the
dependent's config hash (:func:`dependent_hash`), so a changed source gives the dependent a new id.
The source saves its final model under ``model/`` in its run directory (``RunSpec.save_model``),
sealed like a checkpoint; the worker verifies it before loading (jobs/sources.py).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

from jobs.contract.base import SAFE_NAME, Strict

# What a dependent takes from its source's final model:
#   model    every weight: backbone (a LoRA update merged in) and task head; same task head shape
#   backbone the encoder (a LoRA update merged in); the task head freshly initialised
#   head     the task head only, on the dependent's own pretrained backbone
#   adapter  the LoRA adapter only (its config and weights), on the dependent's pretrained backbone;
#            the task head freshly initialised; the adapter trains on unless the dependent freezes it
Take = Literal["model", "backbone", "head", "adapter"]
TAKES: tuple[str, ...] = Take.__args__  # type: ignore[attr-defined]
# What trains once the take is loaded:
#   all   as the run's own methods say (full fine-tuning, its LoRA...); under take: adapter, the taken
#         adapter and the new head (the backbone frozen, as under LoRA)
#   head  the task head only: the backbone and a taken adapter stay bit-identical to the source's
Trainable = Literal["all", "head"]
TRAINABLES: tuple[str, ...] = Trainable.__args__  # type: ignore[attr-defined]

MODEL_EXPORT_DIR = "model"  # in a source's run dir: its final model, sealed (complete.json)
MODEL_WEIGHTS_FILE = "model.safetensors"  # the full task model's state dict (LoRA merged in)
ADAPTER_EXPORT_DIR = "adapter"  # under MODEL_EXPORT_DIR: peft's save_pretrained of a LoRA run


class InitFrom(Strict):
    """``init_from: {run: NAME, take: model}``: start from the final model of the run of configuration
    ``NAME`` (same experiment) that pairs with this one (README, "Runs built on runs")."""

    run: str = Field(pattern=SAFE_NAME.pattern, description="a configuration name of the matrix (runs: key)")
    take: Take = "model"
    trainable: Trainable = Field("all", description="what trains after the take: all (as the run's methods "
                                 "say) or head (the task head only; backbone and taken adapter frozen)")

    @model_serializer(mode="wrap")
    def _default_left_out(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        # trainable came after init_from: at its default it is left out of spec.json and so of the config
        # hash, which keeps the ids of the dependents submitted before it
        dumped = handler(self)
        if isinstance(dumped, dict) and dumped.get("trainable") == "all":
            del dumped["trainable"]
        return dumped


class SourceRef(Strict):
    """The source run a dependent was paired with at submit (spec.json ``source``)."""

    key: Literal["init_from", "select_from"] = "init_from"  # the matrix key that named it (data.select_from)
    run_id: str
    run_name: str
    config_hash: str  # the source's, as submitted: the worker refuses a source whose spec.json differs
    take: Take | None = None  # init_from's take; None for select_from (it takes the teacher's scores)


def dependent_hash(train_digest: str, source: SourceRef) -> str:
    """The config hash of a dependent: its own training config's hash combined with its source's run id
    (which carries the source's hash, and so on up the chain)."""
    text = f"{train_digest}|{source.key}:{source.run_id}:{source.take}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]
