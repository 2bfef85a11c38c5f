"""Refusing a run whose estimated peak GPU memory exceeds its partition, naming the changes that would fit.

The estimate is :func:`orchestrator.vram.estimate`; here it is compared with the partition's ``gpu_mem_gb``
after a safety margin, and the knob changes that would fit are searched: the micro-batch made smaller with
the accumulation larger (the effective batch kept), gradient checkpointing, 8-bit AdamW.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from jobs.contract import TrainConfig
from orchestrator.oomretry import smallest_prime_factor
from orchestrator.vram import Estimate, estimate

SAFETY_MARGIN = 0.10  # refused when estimate * 1.10 > gpu_mem_gb: calibration aims at +-15%, errs high



def needed_gib(value: Estimate) -> float:
    """The estimate with the safety margin: what must fit in the partition's gpu_mem_gb."""
    return value.total_gib * (1 + SAFETY_MARGIN)


def fitting_changes(train: TrainConfig, config: Mapping[str, Any], limit_gib: float) -> list[tuple[str, float]]:
    """Knob changes that would fit ``limit_gib``, each with its estimate (GiB, margin excluded):
    the micro-batch made smaller with accumulation larger by the same factor (the rule of ``oom_retry``:
    divided by its smallest prime factor, until it fits), checkpointing, 8-bit AdamW; when none fits
    alone, checkpointing and 8-bit AdamW together, at the first micro-batch of that rule that fits."""
    found: list[tuple[str, float]] = []

    def fits(changed: TrainConfig) -> float | None:
        value = estimate(changed, config)
        return value.total_gib if isinstance(value, Estimate) and needed_gib(value) <= limit_gib else None

    for batch, steps in _smaller_batches(train.batch_size, train.gradient_accumulation_steps):
        if (gib := fits(train.model_copy(update={"batch_size": batch, "gradient_accumulation_steps": steps}))):
            text = (f"batch_size: {batch} with gradient_accumulation_steps: {steps}, "
                    f"the same effective batch {batch * steps}")
            found.append((text, gib))
            break
    lighter = {"gradient_checkpointing": True, "optimizer": "adamw_8bit"}
    for key, value in lighter.items():
        if getattr(train, key) != value and (gib := fits(train.model_copy(update={key: value}))) is not None:
            found.append((f"{key}: {str(value).lower()}", gib))
    if not found:
        both = train.model_copy(update=lighter)
        start = (both.batch_size, both.gradient_accumulation_steps)
        for batch, steps in (start, *_smaller_batches(*start)):
            if (gib := fits(both.model_copy(update={"batch_size": batch, "gradient_accumulation_steps": steps}))):
                text = "gradient_checkpointing: true, optimizer: adamw_8bit"
                if batch != both.batch_size:
                    text += f", batch_size: {batch} with gradient_accumulation_steps: {steps}"
                found.append((text, gib))
                break
    return found


def _smaller_batches(batch: int, steps: int) -> Iterator[tuple[int, int]]:
    """(micro-batch, accumulation steps), the micro-batch divided by its smallest prime factor and the
    accumulation multiplied by it (the rule of ``oom_retry``: the same effective batch), down to 1."""
    while batch > 1:
        factor = smallest_prime_factor(batch)
        batch, steps = batch // factor, steps * factor
        yield batch, steps


def fit_problem(train: TrainConfig, config: Mapping[str, Any] | None, limit_gib: float, partition: str) -> str | None:
    """Why ``train`` would not fit a partition of ``limit_gib`` GiB (with the changes that would), or None."""
    value = estimate(train, config)
    if not isinstance(value, Estimate) or needed_gib(value) <= limit_gib:
        return None
    assert config is not None  # an Estimate needs a config
    changes = fitting_changes(train, config, limit_gib)
    advice = ("; would fit: " + "; ".join(f"{text} (~{gib:.1f} GiB)" for text, gib in changes)) if changes else \
        ("; nothing of batch_size/gradient_accumulation_steps, gradient_checkpointing, 8-bit AdamW fits: "
         "use a partition with more GPU memory")
    return (f"estimated peak GPU memory {value.total_gib:.1f} GiB (at {value.phase}; {int(SAFETY_MARGIN * 100)}% "
            f"margin: {needed_gib(value):.1f} GiB) exceeds partition {partition}'s gpu_mem_gb {limit_gib:g}" + advice)
