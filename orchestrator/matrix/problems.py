"""Problems as ``(key path, message)`` pairs, reported where the user typed the key.

pydantic reports an unknown key of the *merged* config of a run; a user wants to hear
``defaults.learning_rte: unknown key (did you mean 'learning_rate'?)`` at the place the
key was typed. These helpers walk a raw YAML mapping against a model's fields, name
another tool's spelling of a knob, and turn pydantic's errors into messages that name the
key path, the value and the form to write instead.
"""

from __future__ import annotations

import difflib
import functools
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

Problems = list[tuple[str, str]]

# Names from HF TrainingArguments, peft and common training scripts -> ours. They are
# refused with the exact replacement rather than accepted: one spelling a knob keeps run
# ids, tables and grid axes unambiguous. Keyed by the section they are written in.
ALIASES: dict[str, dict[str, str]] = {
    "TrainConfig": {
        "lr": "learning_rate", "learning_rate_init": "learning_rate",
        "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size",
        "per_device_eval_batch_size": "eval_batch_size",
        "num_train_epochs": "epochs", "num_epochs": "epochs", "epoch": "epochs",
        "lr_scheduler_type": "lr_scheduler", "warmup_ratio": "warmup", "warmup_steps": "warmup",
        "max_length": "max_seq_length", "max_seq_len": "max_seq_length", "stride": "doc_stride",
        "model": "model_name_or_path", "model_name": "model_name_or_path",
        "optim": "optimizer", "seed_value": "seed", "gradient_accumulation": "gradient_accumulation_steps",
        "dataloader_num_workers": "dataloader_workers", "attn_implementation": "attention",
        "torch_compile": "compile", "extend": "extends", "parent": "extends",
        "rank": "lora.r", "lora_r": "lora.r", "lora_rank": "lora.r", "lora_alpha": "lora.alpha",
        "lora_dropout": "lora.dropout", "target_modules": "lora.target_modules",
    },
    "LoraConfig": {"rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
                   "target": "target_modules", "modules": "target_modules", "preset": "placement"},
    "DataConfig": {"num_train_samples": "max_train_samples", "train_samples": "max_train_samples",
                   "n_train": "max_train_samples", "max_samples": "max_train_samples",
                   "num_eval_samples": "max_eval_samples", "corruption": "noise", "perturbation": "noise"},
    "NoiseConfig": {"type": "kind", "noise_type": "kind", "p": "rate", "prob": "rate", "probability": "rate",
                    "level": "rate", "splits": "apply_to", "split": "apply_to", "noise_seed": "seed"},
    "Resources": {"gres": "gpus", "gpus_per_node": "gpus", "cpus": "cpus_per_task",
                  "mem": "mem_gb", "memory": "mem_gb", "time": "time_min", "time_limit": "time_min"},
}
# HF/TRL names whose replacement is a knob with a value of its own, not a rename.
FORM_ALIASES: dict[str, dict[str, str]] = {
    "TrainConfig": {
        "packing": "padding: packed",
        "group_by_length": "padding: dynamic with bucketing: true",
        "load_best_model_at_end": "early_stopping: {metric: accuracy, patience: 3} (the best checkpoint is "
                                  "then the one evaluated and reported)",
        "metric_for_best_model": "early_stopping: {metric: NAME, patience: 3}",
        "early_stopping_patience": "early_stopping: {metric: NAME, patience: N}",
        "early_stopping_threshold": "early_stopping: {metric: NAME, patience: N, min_delta: X}",
        "evaluation_strategy": "eval_strategy: steps with eval_steps: N, or eval_strategy: epoch",
        "resume_from_checkpoint": "nothing: a requeued or resubmitted run resumes from its last sealed checkpoint",
    },
}
_PRECISION_FLAGS = ("fp16", "bf16")
RUN_ONLY = ("extends",)  # alias targets that only a run body may hold

# What a refused resource is measured in, for values written the SLURM way (time=4:00:00, mem=16G).
UNIT_HINTS = {"time_min": "minutes as a whole number (4:00:00 is time_min: 240)",
              "mem_gb": "GB as a number (16G is mem_gb: 16)"}
# A section given as a scalar or a list (oom_retry: true, noise: word_swap): the form to write instead.
SECTION_FORMS = {"oom_retry": "oom_retry: {max_adaptations: 2}",
                 "noise": "noise: {kind: word_swap, rate: 0.1} (under data:)",
                 "lora": "lora: {r: 8} (or lora: {} for the defaults)",
                 "quantization": "quantization: {bits: 4}",
                 "compile": "compile: {mode: default}",
                 "freeze": "freeze: {layers: 6}",
                 "synthetic": "synthetic: {} (under data:)",
                 "early_stopping": "early_stopping: {metric: accuracy, patience: 3, min_delta: 0.0}",
                 "init_from": "init_from: {run: NAME, take: model}",
                 "select_from": "select_from: {run: NAME, strategy: hard, size: 200} (under data:)",
                 "mix": "mix: {easy: 0.2, middle: 0.6, hard: 0.2}"}


def suggest(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or a prefix of one (``extend``)."""
    prefixed = sorted(c for c in choices if len(word) >= 3 and c.startswith(word))
    match = prefixed[:1] or difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def alias_hint(model: type[BaseModel], key: str, value: Any, also: tuple[str, ...] = ("extends",)) -> str | None:
    """The exact replacement for a key known under another name, e.g. ``lr`` or ``fp16: true``.
    ``also``: the keys allowed beside the model's fields where ``key`` was written (a run's
    ``extends``; ``defaults`` have none)."""
    if model.__name__ == "TrainConfig" and key in _PRECISION_FLAGS:
        return f"write precision: {key}" if value is True else "drop it (precision: fp32 is the default)"
    form = FORM_ALIASES.get(model.__name__, {}).get(key)
    if form is not None:
        return f"write {form} ({key} is another tool's name)"
    target = ALIASES.get(model.__name__, {}).get(key)
    if target is None:
        return None
    shown = value if not isinstance(value, (dict, list)) else "..."
    if target in RUN_ONLY:
        if target not in also:
            return f"{target} is written on a run (runs.NAME.{target}: {shown}), not here"
        return f"write {target}: {shown}"
    if "." in target:
        section, leaf = target.split(".", 1)
        return f"write {section}: {{{leaf}: {shown}}} ({key} is another tool's name for {target})"
    return f"write {target}: {shown} ({key} is another tool's name for it)"


@functools.cache  # asked for every key of every run: 10,000 runs' expansion spent a tenth of its time here
def nested_model(model: type[BaseModel], field: str) -> type[BaseModel] | None:
    """The model class behind ``field`` (unwrapping Optional/Union), if it is one."""
    annotation = model.model_fields[field].annotation
    candidates = [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        candidates = list(typing.get_args(annotation))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def unknown_keys(model: type[BaseModel], data: Any, path: str, also: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Problems for keys of ``data`` that ``model`` does not have, recursively. ``also``:
    keys allowed beside the model's fields (a run's ``extends``), offered as suggestions too."""
    if not isinstance(data, dict):
        return []
    problems: list[tuple[str, str]] = []
    fields = list(model.model_fields) + list(also)
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key in also:
            continue
        if key not in model.model_fields:
            hint = alias_hint(model, str(key), value, also)
            problems.append((key_path, f"unknown key: {hint}" if hint else f"unknown key{suggest(str(key), fields)}"))
            continue
        child = nested_model(model, key)
        if child is not None:
            problems += unknown_keys(child, value, key_path)
    return problems


def known_only(model: type[BaseModel], data: Any) -> Any:
    """``data`` without the keys ``model`` does not have (recursively). Those are reported
    by :func:`unknown_keys`; dropping them lets validation go on and report the rest."""
    if not isinstance(data, dict):
        return data
    kept = {}
    fields = field_names(model)
    for key, value in data.items():
        if key in fields:
            child = nested_model(model, key)
            kept[key] = known_only(child, value) if child is not None else value
    return kept


@functools.cache
def field_names(model: type[BaseModel]) -> frozenset[str]:
    """``model``'s field names, as a set (``model_fields`` is a Python-level class property in pydantic 2.x)."""
    return frozenset(model.model_fields)


def has_path(model: type[BaseModel], dotted: str) -> bool:
    """Whether ``a.b.c`` names a field of ``model`` (through nested models)."""
    current: type[BaseModel] | None = model
    for part in dotted.split("."):
        if current is None or part not in current.model_fields:
            return False
        current = nested_model(current, part)
    return True


def leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every settable dotted path of ``model``, for 'did you mean' on grid axes."""
    paths: list[str] = []
    for name in model.model_fields:
        path = f"{prefix}{name}"
        paths.append(path)
        child = nested_model(model, name)
        if child is not None:
            paths += leaf_paths(child, path + ".")
    return paths


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error message never echoes a huge value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _where(loc: tuple[Any, ...], origin: dict[str, str], fallback: str) -> str:
    parts = [str(p) for p in loc]
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in origin:
            return origin[key] + "".join(f".{p}" for p in parts[end:])
    return fallback


def pydantic_problems(exc: ValidationError, origin: dict[str, str], fallback: str) -> Problems:
    problems: Problems = []
    for error in exc.errors():
        if error["type"] == "extra_forbidden":
            continue  # reported where the key was typed, by unknown_keys
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in {"int", "float", "str", "bool"})))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "literal_error":
            expected = re.findall(r"'([^']*)'|(\d+)", str(error.get("ctx", {}).get("expected", "")))
            choices = [a or b for a, b in expected]
            message = f"{error['input']!r} is not one of {', '.join(choices)}{suggest(str(error['input']), choices)}"
        elif isinstance(error.get("input"), (str, int, float, bool, list)) or error["input"] is None:
            # every refused value is named, not only wrong types (batch_size: 0 -> "0: ... >= 1")
            message = f"{shown(error['input'])}: {message}"
            if error["type"] in ("tuple_type", "list_type"):
                message = f"{shown(error['input'])}: a list is wanted, e.g. [{error['input']}]"
            elif isinstance(error["input"], str) and loc and str(loc[-1]) in UNIT_HINTS:
                message += f"; write {UNIT_HINTS[str(loc[-1])]}"
            elif error["type"] in ("model_type", "dict_type") and loc and str(loc[-1]) in SECTION_FORMS:
                message = f"{shown(error['input'])}: a section is wanted; write e.g. {SECTION_FORMS[str(loc[-1])]}"
        problems.append((_where(loc, origin, fallback) if loc else fallback, message))
    return problems
