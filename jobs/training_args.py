"""Map the run spec's knobs onto ``transformers.TrainingArguments`` (5.17 to 5.x).

transformers 5 renamed several arguments (``eval_strategy``, ``use_cpu``,
``warmup_steps`` taking a ratio below 1, ``activation_checkpointing``); where the
name differs between the versions we support, the one the installed version has
is used (see :func:`_first_field`).

Settings that matter for correctness or speed, whatever the spec:

* ``logging_nan_inf_filter=False``: otherwise the Trainer replaces a NaN loss by a
  running mean (hiding divergence) and syncs with the GPU every step to do so;
* ``save_total_limit=2``: the last two checkpoints, for resume after preemption;
* ``report_to="none"`` (the spec's ``report_to`` callbacks are built by :mod:`jobs.reporting`, pointed
  at the run directory); evaluation during training only with ``eval_strategy`` (the task
  evaluates after training in any case, see :mod:`jobs.curves`); with ``early_stopping`` a
  checkpoint at every evaluation and the best one's weights loaded at the end;
* with CUDA: pinned host memory and non-blocking host-to-device copies, so the
  input copy does not wait for the previous step to finish.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from jobs.contract import TrainConfig
from jobs.optim import optimizer_arguments

_FIELDS = {field.name for field in dataclasses.fields(TrainingArguments)}


def _first_field(*names: str) -> str:
    """The first of ``names`` that this transformers version's TrainingArguments has."""
    for name in names:
        if name in _FIELDS:
            return name
    raise RuntimeError(f"transformers {names}: none of these TrainingArguments exists in this version")


def precision_arguments(train: TrainConfig) -> dict[str, Any]:
    """Mixed precision: weights stay fp32, autocast to fp16 (with a grad scaler) or bf16."""
    return {"fp16": train.precision == "fp16", "bf16": train.precision == "bf16"}


def compile_arguments(train: TrainConfig) -> dict[str, Any]:
    """torch.compile through the Trainer (the same call the plain Trainer reference makes)."""
    if train.compile is None or not train.compile.enabled:
        return {"torch_compile": False}
    mode = None if train.compile.mode == "default" else train.compile.mode
    return {"torch_compile": True, "torch_compile_backend": train.compile.backend, "torch_compile_mode": mode}


def checkpointing_arguments(train: TrainConfig) -> dict[str, Any]:
    """Activation (gradient) checkpointing; non-reentrant so frozen embeddings still get grads through."""
    if not train.gradient_checkpointing:
        return {}
    flag = _first_field("activation_checkpointing", "gradient_checkpointing")
    kwargs = _first_field("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs")
    return {flag: True, kwargs: {"use_reentrant": False}}


def schedule_arguments(train: TrainConfig) -> dict[str, Any]:
    """Length of training, schedule and warm-up (a ratio below 1, else a step count)."""
    warmup: float | int = train.warmup if train.warmup < 1 else int(train.warmup)
    arguments: dict[str, Any] = {
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps if train.max_steps is not None else -1,
        "lr_scheduler_type": train.lr_scheduler,
        "warmup_steps": warmup,
        "per_device_train_batch_size": train.batch_size,
        "per_device_eval_batch_size": train.eval_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
    }
    return arguments


def evaluation_arguments(train: TrainConfig) -> dict[str, Any]:
    """Evaluation during training; with early stopping, the Trainer's best-checkpoint tracking: a
    checkpoint at each evaluation (so the best one exists: save_steps gives way to eval_steps), the
    metric's direction from its name, and the best weights loaded when training ends."""
    if train.eval_strategy is None:
        return {"eval_strategy": "no"}
    arguments: dict[str, Any] = {"eval_strategy": train.eval_strategy}
    if train.eval_steps is not None:
        arguments["eval_steps"] = train.eval_steps
    stopping = train.early_stopping
    if stopping is not None:
        arguments.update({
            "save_strategy": train.eval_strategy,
            "load_best_model_at_end": True,
            "metric_for_best_model": stopping.metric,
            "greater_is_better": stopping.greater_is_better,
        })
        if train.eval_steps is not None:
            arguments["save_steps"] = train.eval_steps
    return arguments


def device_arguments(train: TrainConfig, cuda: bool) -> dict[str, Any]:
    """CPU or GPU, data loading workers and host-to-device copies."""
    arguments: dict[str, Any] = {
        "use_cpu": not cuda,
        "dataloader_num_workers": train.dataloader_workers,
        "dataloader_pin_memory": cuda,
        "dataloader_persistent_workers": train.dataloader_workers > 0,
    }
    if cuda:
        arguments["accelerator_config"] = {"non_blocking": True}
    return arguments


def build_training_arguments(train: TrainConfig, output_dir: Path, cuda: bool | None = None) -> TrainingArguments:
    """TrainingArguments for ``train``, checkpointing into ``output_dir``."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    arguments: dict[str, Any] = {
        "output_dir": str(output_dir),
        "seed": train.seed,
        "data_seed": train.seed,
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "save_total_limit": 2,
        "logging_strategy": "steps",
        "logging_steps": train.logging_steps,
        "logging_first_step": True,
        "logging_nan_inf_filter": False,
        "report_to": "none",
        "disable_tqdm": True,
        "remove_unused_columns": True,
    }
    for part in (
        precision_arguments(train),
        compile_arguments(train),
        checkpointing_arguments(train),
        schedule_arguments(train),
        device_arguments(train, cuda),
        optimizer_arguments(train),
        evaluation_arguments(train),
    ):
        arguments.update(part)
    return TrainingArguments(**arguments)
