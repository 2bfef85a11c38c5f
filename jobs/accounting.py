"""A run's training figures across its attempts (requeues, preemptions, retries).

Each checkpoint carries ``accounting.json``: the figures of steps 1..N, whichever attempts
ran them. An attempt that resumes from checkpoint-N starts from those and adds its own, so
the work of steps after N that an interrupted attempt did and lost is counted once, when it
is redone, exactly as in an uninterrupted run:

* ``loss_sum``: the sum of the Trainer's per-step training losses (what the Trainer divides
  by the steps for ``train_loss``); ``train.loss`` is ``loss_sum / steps``.
* ``samples``, ``real_tokens``: rows and non-padding tokens of the steps run.
* ``runtime_s``: training time of those steps (an attempt's time from its first step's start
  to its last step's end or its save), summed; the rates are totals over it, so an attempt
  that only evaluates adds nothing and takes nothing away.
* ``segments``: each attempt's step timing (compile time, steady step time and rates);
  ``compile_time_s`` is their sum, the steady figures their mean weighted by steps.
* memory peaks: the maximum over attempts; ``energy_j``: the sum (null when an attempt that
  trained could not measure it while another could).

Shapes: every figure a float or int, None when unmeasured; see :data:`EMPTY`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jobs.contract import ACCOUNTING_FILE

PEAK_KEYS = ("peak_allocated_mib", "peak_reserved_mib", "step_peak_allocated_mib", "step_peak_reserved_mib")
STEADY_KEYS = ("steady_step_time_s", "steady_samples_per_s", "steady_tokens_per_s")

EMPTY: dict[str, Any] = {
    "steps": 0, "loss_sum": 0.0, "samples": 0, "real_tokens": 0, "runtime_s": 0.0,
    "segments": [], "memory": {}, "energy_j": None, "energy_attempts_unmeasured": 0, "device_names": [],
}


def load(checkpoint: Path | None) -> dict[str, Any]:
    """The figures a checkpoint carries (EMPTY without one). Raises ValueError when a
    verified checkpoint has no readable accounting (the seal lists it, so this is a bug)."""
    if checkpoint is None:
        return dict(EMPTY)
    try:
        return {**EMPTY, **json.loads((checkpoint / ACCOUNTING_FILE).read_text(encoding="utf-8"))}
    except (OSError, ValueError) as error:
        raise ValueError(f"{checkpoint / ACCOUNTING_FILE}: unreadable figures of earlier attempts: {error}") from error


def combine(prior: dict[str, Any], attempt: dict[str, Any]) -> dict[str, Any]:
    """``prior`` (steps 1..N) plus one attempt's figures (``attempt``: same keys, its ``steps``
    the steps it ran; ``segment`` its timing; ``memory``; ``energy_j``)."""
    if not attempt.get("steps"):
        return dict(prior)
    total = {key: prior[key] + attempt[key] for key in ("steps", "loss_sum", "samples", "real_tokens", "runtime_s")}
    total["segments"] = [*prior["segments"], {**attempt["segment"], "steps": attempt["steps"]}]
    memory = dict(prior["memory"])
    for key, value in attempt["memory"].items():
        if key in PEAK_KEYS:
            memory[key] = max((v for v in (memory.get(key), value) if v is not None), default=None)
        else:
            memory[key] = value
    total["memory"] = memory
    device = attempt["memory"].get("device_name")
    total["device_names"] = sorted(set(prior["device_names"]) | ({device} if device else set()))
    energies = [value for value in (prior["energy_j"], attempt.get("energy_j")) if value is not None]
    total["energy_j"] = sum(energies) if energies else None
    total["energy_attempts_unmeasured"] = prior["energy_attempts_unmeasured"] + (attempt.get("energy_j") is None)
    return total


def summary(total: dict[str, Any], planned_steps: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[str]]:
    """(train figures, memory, energy, warnings) of the combined figures; a figure that could
    not be measured is None and named in the warnings, never 0."""
    warnings: list[str] = []
    steps, runtime_s = total["steps"], total["runtime_s"]
    timed = steps > 0 and runtime_s > 0
    train: dict[str, Any] = {
        "loss": total["loss_sum"] / steps if steps else None,
        "samples": total["samples"], "real_tokens": total["real_tokens"],
        "runtime_s": runtime_s if timed else None,
        "samples_per_s": total["samples"] / runtime_s if timed else None,
        "steps_per_s": steps / runtime_s if timed else None,
        "tokens_per_s": total["real_tokens"] / runtime_s if timed else None,
        **_segment_timing(total["segments"]),
    }
    unmeasured = [f"train.{key}" for key in ("loss", "runtime_s", "samples_per_s") if train[key] is None]
    if unmeasured:
        warnings.append(f"{', '.join(unmeasured)} not measured: no attempt timed a training step "
                        f"({steps} of {planned_steps} steps carried figures)")
    if len(total["device_names"]) > 1:
        warnings.append(f"attempts trained on different devices ({', '.join(total['device_names'])}): "
                        "the timing figures mix them")
    energy: dict[str, Any] = {}
    if total["energy_j"] is not None and total["energy_attempts_unmeasured"]:
        energy = {"energy_j": None, "avg_power_w": None}
        warnings.append(f"energy.energy_j not measured: {total['energy_attempts_unmeasured']} attempt(s) that trained "
                        "had no NVML energy counter")
    elif total["energy_j"] is not None and timed:
        energy = {"energy_j": total["energy_j"], "avg_power_w": total["energy_j"] / runtime_s}
    return train, total["memory"], energy, warnings


def _segment_timing(segments: list[dict[str, Any]]) -> dict[str, Any]:
    compile_times = [s["compile_time_s"] for s in segments if s.get("compile_time_s") is not None]
    result: dict[str, Any] = {"compile_time_s": sum(compile_times) if compile_times else None,
                              "attempts_timed": len(segments)}
    for key in STEADY_KEYS:
        weighted = [(s[key], s["steps"]) for s in segments if s.get(key) is not None]
        weight = sum(steps for _, steps in weighted)
        result[key] = sum(value * steps for value, steps in weighted) / weight if weight else None
    return result
