"""jobs.accounting: a run's figures summed over attempts (the arithmetic; the trainer tests
check it against real interrupted runs)."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.accounting import EMPTY, combine, summary


def attempt(steps: int, energy_j: float | None = None, device: str = "NVIDIA H200", peak: float = 100.0,
            step_time_s: float = 0.1) -> dict[str, Any]:
    return {"steps": steps, "loss_sum": 2.0 * steps, "samples": 8 * steps, "real_tokens": 800 * steps,
            "runtime_s": step_time_s * steps + 5.0, "energy_j": energy_j,
            "segment": {"compile_time_s": 5.0, "steady_step_time_s": step_time_s, "steady_samples_per_s": 8 / step_time_s},
            "memory": {"peak_allocated_mib": peak, "peak_reserved_mib": peak + 10, "device_name": device}}


def test_two_attempts_add_up_and_an_eval_only_attempt_changes_nothing() -> None:
    first = combine(dict(EMPTY), attempt(10, energy_j=300.0, peak=120.0, step_time_s=0.1))
    both = combine(first, attempt(30, energy_j=700.0, peak=90.0, step_time_s=0.2))
    assert combine(both, {"steps": 0}) == both
    train, memory, energy, warnings = summary(both, planned_steps=40)
    assert warnings == []
    assert train["loss"] == 2.0 and train["samples"] == 320 and train["runtime_s"] == pytest.approx(1 + 6 + 10)
    assert train["samples_per_s"] == pytest.approx(320 / 17) and train["steps_per_s"] == pytest.approx(40 / 17)
    assert train["compile_time_s"] == 10.0 and train["attempts_timed"] == 2
    assert train["steady_step_time_s"] == pytest.approx((0.1 * 10 + 0.2 * 30) / 40)  # weighted by steps
    assert memory["peak_allocated_mib"] == 120.0 and memory["device_name"] == "NVIDIA H200"
    assert energy == {"energy_j": 1000.0, "avg_power_w": pytest.approx(1000 / 17)}


def test_what_no_attempt_measured_is_null_and_named() -> None:
    train, _, energy, warnings = summary(dict(EMPTY), planned_steps=40)
    assert train["loss"] is None and train["runtime_s"] is None and train["samples_per_s"] is None
    assert len(warnings) == 1 and "train.loss, train.runtime_s, train.samples_per_s not measured" in warnings[0]
    assert energy == {}  # no energy counter anywhere (CPU): nothing to report, nothing claimed


def test_energy_measured_in_one_attempt_only_is_null_not_a_part() -> None:
    mixed = combine(combine(dict(EMPTY), attempt(10, energy_j=300.0)), attempt(30, energy_j=None, device="Tesla T4"))
    _, memory, energy, warnings = summary(mixed, planned_steps=40)
    assert energy == {"energy_j": None, "avg_power_w": None}
    assert any("energy.energy_j not measured" in w for w in warnings)
    assert any("different devices (NVIDIA H200, Tesla T4)" in w for w in warnings)
    assert memory["device_name"] == "Tesla T4"
