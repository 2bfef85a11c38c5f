"""OOM-adaptive retry: what ``submit --retry-failed`` changes in a run that ran out of GPU memory.

A run whose ``failure.json`` says ``cuda_oom`` and whose config sets ``oom_retry`` is resubmitted with
a smaller micro-batch and the same effective batch (``batch_size x gradient_accumulation_steps``
samples an optimizer step): each adaptation divides ``batch_size`` by its smallest prime factor (halves
it, for the usual powers of two) and multiplies ``gradient_accumulation_steps`` by the same factor;
at ``batch_size`` 1 the next one turns on ``gradient_checkpointing``. At most
``oom_retry.max_adaptations`` a run, counted over all its retries.

The adapted run keeps its run id and directory (same configuration, same optimizer steps, so its
checkpoints resume soundly); the change travels as ``RunSpec.adaptation``, which the worker applies.
A run resubmitted for any other reason keeps the adaptation it had: its checkpoints were written with it
and the matrix's micro-batch ran out of memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.contract import MicroBatching, OomAdaptation, RunDir, RunSpec


@dataclass(frozen=True)
class Retry:
    """The spec to resubmit and, when it differs from the plain retry, a line saying why."""

    spec: RunSpec
    note: str | None = None


def smallest_prime_factor(number: int) -> int:
    """2 for even numbers, the number itself for a prime; ``number`` >= 2."""
    factor = 2
    while factor * factor <= number:
        if number % factor == 0:
            return factor
        factor += 1
    return number


def next_micro_batching(current: MicroBatching) -> MicroBatching | None:
    """One step of the policy (same effective batch), or None when nothing is left to change."""
    if current.batch_size > 1:
        factor = smallest_prime_factor(current.batch_size)
        return current.model_copy(update={"batch_size": current.batch_size // factor,
                                          "gradient_accumulation_steps": current.gradient_accumulation_steps * factor})
    if not current.gradient_checkpointing:
        return current.model_copy(update={"gradient_checkpointing": True})
    return None


def describe(batching: MicroBatching) -> str:
    """``batch_size 4 x accumulation 2`` (+ ``, gradient checkpointing``)."""
    text = f"batch_size {batching.batch_size} x accumulation {batching.gradient_accumulation_steps}"
    return text + (", gradient checkpointing" if batching.gradient_checkpointing else "")


def plan_retry(spec: RunSpec, previous: RunSpec | None, failure: dict[str, Any] | None) -> Retry:
    """What to resubmit for ``spec`` (from the matrix), given the run directory's current spec.json
    (``previous``) and failure.json (``failure``; None when the worker wrote none)."""
    carried = previous.adaptation if previous is not None and previous.config_hash == spec.config_hash else None
    kept = spec if carried is None and previous is None else spec.model_copy(update={"adaptation": carried})
    kept_note = f"keeps its OOM adaptation ({describe(carried.to)})" if carried is not None else None
    if failure is None or failure.get("reason") != "cuda_oom":
        return Retry(kept, kept_note)
    policy = spec.train.oom_retry
    if failure.get("during") == "evaluating":  # training had ended: a smaller micro-batch would change nothing
        return Retry(kept, "failed with cuda_oom during evaluation: resubmitted " + (kept_note or "unchanged")
                     + "; lower eval_batch_size (oom_retry adapts the training micro-batch only)")
    if policy is None:
        return Retry(kept, "failed with cuda_oom: resubmitted " + (kept_note or "unchanged")
                     + " (set oom_retry: {max_adaptations: N} to let --retry-failed shrink its micro-batch)")
    done = carried.adaptations if carried is not None else 0
    current = carried.to if carried is not None else MicroBatching.of(spec.train)
    if done >= policy.max_adaptations:
        return Retry(kept, f"failed with cuda_oom after {done} of oom_retry.max_adaptations {policy.max_adaptations} "
                     f"adaptations: resubmitted with {describe(current)}; raise max_adaptations, or change the "
                     "config (8-bit optimizer, shorter max_seq_length, a larger GPU)")
    following = next_micro_batching(current)
    if following is None:
        return Retry(kept, f"failed with cuda_oom at {describe(current)}: nothing left to adapt, resubmitted "
                     "unchanged; change the config (8-bit optimizer, shorter max_seq_length, a larger GPU)")
    adaptation = OomAdaptation.model_validate({"from": MicroBatching.of(spec.train), "to": following,
                                               "adaptations": done + 1})
    return Retry(spec.model_copy(update={"adaptation": adaptation}),
                 f"failed with cuda_oom: adapted {describe(current)} -> {describe(following)} "
                 f"(adaptation {done + 1} of {policy.max_adaptations}; same effective batch)")


def retry_of(spec: RunSpec, run_dir: RunDir) -> Retry:
    """:func:`plan_retry` with the run directory's spec.json and failure.json (either may be absent
    or unreadable: then the run is resubmitted as the matrix says)."""
    previous_raw = run_dir.read_optional(run_dir.spec_path)
    try:
        previous = RunSpec.model_validate(previous_raw) if previous_raw is not None else None
    except ValueError:  # a spec.json of an older or newer schema: no adaptation to carry
        previous = None
    return plan_retry(spec, previous, run_dir.read_optional(run_dir.failure_path))
