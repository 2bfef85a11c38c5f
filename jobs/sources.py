"""A run's source (``init_from``): the source saves its final model, the dependent verifies and loads it.

Source side, :func:`export_model` (when ``spec.save_model``): ``model/`` in its run directory holds
``model.safetensors`` (the task model's whole state dict, a LoRA update merged in) and, for a LoRA
run, ``adapter/`` (peft's ``save_pretrained``); sealed like a checkpoint (jobs/resume.py), before
result.json is written, so a completed source has a whole export.

Dependent side, :func:`verified_source` at start, before any data is read: the source's run
directory is its sibling (``<experiment>/runs/<source run id>``); it is refused, with
``source_unusable``, unless its spec.json has the config hash recorded at the dependent's submit,
its result.json exists (the run completed), and its export verifies (every file's size and SHA-256).
:func:`apply_source` then loads what ``take`` says into the freshly built model.

A later ``select_from`` (data selection from a teacher's scores) finds and verifies its source run
with the same :func:`source_run_dir` / :func:`check_source_run`, with its own required files.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jobs.contract import ADAPTER_EXPORT_DIR, MODEL_EXPORT_DIR, MODEL_WEIGHTS_FILE, RunDir, RunSpec, SourceRef
from jobs.resume import seal_checkpoint, verify_sealed

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"


class SourceError(RuntimeError):
    """The source run cannot be used (classified as ``source_unusable`` in failure.json)."""


@dataclass(frozen=True)
class Source:
    """A verified source: its reference and the folder of its exported model."""

    ref: SourceRef
    export_dir: Path


def source_run_dir(run_dir: RunDir, ref: SourceRef) -> RunDir:
    """The source's run directory: a sibling of the dependent's in the experiment's runs/."""
    return RunDir(run_dir.path.parent / ref.run_id)


def check_source_run(run_dir: RunDir, ref: SourceRef) -> RunDir:
    """The source's run dir once its spec has the recorded config hash and its result.json exists.
    Raises SourceError saying what is wrong and what to do."""
    source = source_run_dir(run_dir, ref)
    name = f"source run {ref.run_name} ({source.path})"
    try:
        spec = source.read_spec()
    except (OSError, ValueError) as exc:
        raise SourceError(f"{name}: spec.json unreadable ({exc}); submit the source again") from exc
    if spec.config_hash != ref.config_hash:
        raise SourceError(f"{name}: config hash {spec.config_hash}, {ref.config_hash} was recorded when this run "
                          "was submitted; the source changed: submit the matrix again (this run gets a new id)")
    if not source.result_path.exists():
        raise SourceError(f"{name} has not completed (no result.json): it failed or was cancelled; "
                          "rerun the chain with `orchestrate submit --retry-failed`")
    return source


def verified_source(spec: RunSpec, run_dir: RunDir) -> Source | None:
    """The spec's source, checked (:func:`check_source_run`) and its export verified; None without one."""
    ref = spec.source
    if ref is None or ref.key != "init_from":  # a select_from teacher gives scores, not a model (jobs/scores.py)
        return None
    source = check_source_run(run_dir, ref)
    export = source.path / MODEL_EXPORT_DIR
    required: dict[str, tuple[str, ...]] = {"weights": (MODEL_WEIGHTS_FILE,)}
    if ref.take == "adapter":
        required["adapter"] = (ADAPTER_WEIGHTS,)
    result = source.read_result()
    steps = (result.train or {}).get("steps") if result is not None else None
    problem = verify_sealed(export, required, steps if isinstance(steps, int) else None)
    if problem is not None:
        hint = ("it was trained before a run named it as a source (no export): force it again with "
                f"`orchestrate submit --force {ref.run_name}`" if not export.exists() else "its files changed")
        raise SourceError(f"source run {ref.run_name}: {MODEL_EXPORT_DIR}/ is not whole ({problem}); {hint}")
    return Source(ref, export)


def export_model(model: torch.nn.Module, run_dir: RunDir, step: int) -> Path:
    """Save the final model under ``model/`` and seal it; returns the folder."""
    from peft import PeftModel
    from safetensors.torch import save_model

    folder = run_dir.path / MODEL_EXPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        if "lora" in str(model.peft_config[model.active_adapter].peft_type).lower():
            model.save_pretrained(str(folder / ADAPTER_EXPORT_DIR))
        merged = copy.deepcopy(model).merge_and_unload()  # the task model with the update in its weights
    else:
        merged = model
    save_model(merged, str(folder / MODEL_WEIGHTS_FILE))
    seal_checkpoint(folder, step)
    return folder


def _is_head(key: str, heads: Sequence[str]) -> bool:
    return any(part in heads for part in key.split("."))


def apply_source(model: torch.nn.Module, source: Source, heads: Sequence[str],
                 trainable: str = "all") -> torch.nn.Module:
    """``model`` (freshly built, methods not yet applied) with what ``source.ref.take`` says loaded;
    with ``trainable`` ``head`` everything but the task head frozen (init_from.trainable).
    ``heads``: the task head's module names. Raises SourceError on a mismatch (shapes, keys)."""
    loaded = _loaded(model, source, heads)
    return head_only(loaded, heads) if trainable == "head" else loaded


def head_only(model: torch.nn.Module, heads: Sequence[str]) -> torch.nn.Module:
    """``model`` with only the task head trainable: the backbone and any adapter frozen. Under peft the
    head's trainable copy is its ``modules_to_save`` one; its ``original_module`` stays frozen."""
    trained = 0
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        parameter.requires_grad = _is_head(name, heads) and "original_module" not in parts
        trained += parameter.numel() if parameter.requires_grad else 0
    if trained == 0:
        raise SourceError(f"init_from.trainable: head, but the model has no head parameters named {list(heads)}")
    logger.info("init_from.trainable: head: %d parameters train, the rest is frozen", trained)
    return model


def _loaded(model: torch.nn.Module, source: Source, heads: Sequence[str]) -> torch.nn.Module:
    take = source.ref.take
    if take == "adapter":
        return _with_adapter(model, source.export_dir / ADAPTER_EXPORT_DIR, heads)
    from safetensors.torch import load_file

    state = load_file(str(source.export_dir / MODEL_WEIGHTS_FILE))
    if take == "backbone":
        state = {k: v for k, v in state.items() if not _is_head(k, heads)}
    elif take == "head":
        state = {k: v for k, v in state.items() if _is_head(k, heads)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape mismatch
        raise SourceError(f"take: {take} from {source.ref.run_name}: {str(exc).splitlines()[-1].strip()}") from exc
    # take model: nothing may be missing; backbone: only the (fresh) head; head: only the backbone
    wrong = list(missing) if take == "model" else [k for k in missing if _is_head(k, heads) == (take == "head")]
    if unexpected or wrong or not state:
        raise SourceError(f"take: {take} from {source.ref.run_name}: the saved weights do not fit this model "
                          f"(missing {wrong[:3]}, unexpected {list(unexpected)[:3]}, {len(state)} tensors)")
    logger.info("init_from: took %s (%d tensors) from %s", take, len(state), source.ref.run_id)
    return model


def _with_adapter(model: torch.nn.Module, folder: Path, heads: Sequence[str]) -> torch.nn.Module:
    """The source's LoRA adapter on ``model``, trainable, the task head fresh (not the source's)."""
    from peft import LoraConfig, get_peft_model
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    config = LoraConfig.from_pretrained(str(folder))
    config.modules_to_save = list(heads)
    config.inference_mode = False  # saved configs say True: the adapter trains on
    # peft loads a wrapped head from the weights too: give it this model's freshly initialised head
    fresh = {f"base_model.model.{k}": v.detach().clone() for k, v in model.state_dict().items() if _is_head(k, heads)}
    wrapped = get_peft_model(model, config)  # type: ignore[arg-type]
    weights = {k: v for k, v in load_peft_weights(str(folder)).items() if not _is_head(k, heads)}
    if not weights:
        raise SourceError(f"take: adapter from {folder}: the saved adapter holds no weights")
    weights.update(fresh)
    result = set_peft_model_state_dict(wrapped, weights)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise SourceError(f"take: adapter from {folder}: weights do not fit this model (unexpected {unexpected[:3]})")
    return wrapped


def initial_model(spec: RunSpec) -> Mapping[str, Any]:
    """result.json ``initial_model``: the source run, or the pretrained base (zero-shot: what was evaluated)."""
    if spec.source is not None and spec.source.key == "init_from":
        return {"source_run_id": spec.source.run_id, "source_run_name": spec.source.run_name,
                "take": spec.source.take}
    return {"model_name_or_path": spec.train.model_name_or_path, "random_init": spec.train.random_init}
