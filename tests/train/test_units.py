"""Unit tests of the trainer's small parts: failure classes, flat AdamW, profiler, arguments."""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from jobs.callbacks import FiniteLossGuard
from jobs.contract import TrainConfig
from jobs.failures import NAN_HINT, OOM_HINT, NonFiniteLossError, classify_exception
from jobs.flat_optim import FlatAdamW
from jobs.profiler import StepProfiler, TokenCounter, _StepClock
from jobs.training_args import build_training_arguments

pytestmark = pytest.mark.train


# ------------------------------------------------------------------ failures


def test_cuda_oom_is_classified_with_a_hint() -> None:
    assert classify_exception(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")) == \
        ("cuda_oom", OOM_HINT)
    assert classify_exception(RuntimeError("CUDA error: out of memory")) == ("cuda_oom", OOM_HINT)
    assert "gradient_checkpointing: true" in OOM_HINT and "adamw_8bit" in OOM_HINT


def test_oom_wrapped_in_another_error_is_still_oom() -> None:
    try:
        try:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        except torch.cuda.OutOfMemoryError as inner:
            raise ValueError("evaluation failed") from inner
    except ValueError as outer:
        assert classify_exception(outer)[0] == "cuda_oom"


def test_nan_and_other_exceptions() -> None:
    assert classify_exception(NonFiniteLossError(12, float("nan"))) == ("nan_loss", NAN_HINT)
    assert "step 12" in str(NonFiniteLossError(12))
    assert classify_exception(KeyError("x")) == ("exception", "")
    assert classify_exception(RuntimeError("shape mismatch")) == ("exception", "")


def test_loss_guard_on_cpu_raises_at_the_step() -> None:
    guard = FiniteLossGuard()
    guard.observe(torch.tensor(1.5), step=1)
    guard.check(1, exact=True)
    with pytest.raises(NonFiniteLossError, match="step 2"):
        guard.observe(torch.tensor(float("inf")), step=2)


# ------------------------------------------------------------------ flat AdamW


def _groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if n.endswith("weight")], "weight_decay": 0.1},
            {"params": [p for n, p in named if not n.endswith("weight")], "weight_decay": 0.0}]


@pytest.mark.parametrize("max_norm", [0.5, 1e9, float("inf")])  # clipping every step, never, no clipping
def test_flat_adamw_matches_fused_adamw_step_by_step(max_norm: float) -> None:
    torch.manual_seed(0)
    plain_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 2))
    flat_model = copy.deepcopy(plain_model)
    plain = torch.optim.AdamW(_groups(plain_model), lr=1e-2, fused=True)
    flat = FlatAdamW(_groups(flat_model), lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(6):
        x = torch.randn(4, 8)
        for model in (plain_model, flat_model):
            model.zero_grad()
            model(x).pow(2).sum().backward()
        plain_norm = torch.nn.utils.clip_grad_norm_(plain_model.parameters(), max_norm)
        flat_norm = flat.clip_grad_norm(max_norm)
        torch.testing.assert_close(flat_norm, plain_norm)  # the norm before clipping, as the Trainer logs it
        if max_norm == 0.5:
            assert plain_norm > 0.5  # the clip factor is applied (inside the fused step)
        plain.step()
        flat.step()
    for a, b in zip(plain_model.parameters(), flat_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_flat_adamw_clips_under_a_grad_scaler_and_skips_an_overflowing_step() -> None:
    """fp16's flow: the scaler unscales the flat gradients, the norm is taken, the scaler's step passes its
    found_inf to the fused update (grad_scale None after unscale_) and the clip divisor joins it."""
    torch.manual_seed(0)
    plain_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 2))
    flat_model = copy.deepcopy(plain_model)
    plain = torch.optim.AdamW(_groups(plain_model), lr=1e-2, fused=True)
    flat = FlatAdamW(_groups(flat_model), lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    scalers = {id(plain): torch.amp.GradScaler("cpu", init_scale=2.0**10), id(flat): torch.amp.GradScaler("cpu", init_scale=2.0**10)}
    for step in range(5):
        x = torch.randn(4, 8)
        if step == 2:
            x[0, 0] = float("inf")  # an overflow: both skip this update
        for model, optimizer in ((plain_model, plain), (flat_model, flat)):
            model.zero_grad()
            scalers[id(optimizer)].scale(model(x).pow(2).sum()).backward()
        scalers[id(plain)].unscale_(plain)
        torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 0.5)
        flat.gather_grads()
        scalers[id(flat)].unscale_(flat)
        flat.clip_grad_norm(0.5)
        before = [p.detach().clone() for p in flat_model.parameters()]
        for optimizer in (plain, flat):
            scalers[id(optimizer)].step(optimizer)
            scalers[id(optimizer)].update()
        assert "grad_scale" not in flat.__dict__  # the scaler's attribute is left as it found it
        if step == 2:
            assert all(torch.equal(a, b) for a, b in zip(before, flat_model.parameters()))
    assert scalers[id(flat)].get_scale() == scalers[id(plain)].get_scale() == 2.0**9
    for a, b in zip(plain_model.parameters(), flat_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_flat_adamw_state_survives_a_checkpoint_round_trip() -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = FlatAdamW([{"params": list(model.parameters()), "weight_decay": 0.0}], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    clone = copy.deepcopy(model)
    restored = FlatAdamW([{"params": list(clone.parameters()), "weight_decay": 0.0}], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.state[restored.masters()[0]]["exp_avg"], optimizer.state[optimizer.masters()[0]]["exp_avg"])


def test_a_parameter_without_gradient_counts_as_zero() -> None:
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    optimizer = FlatAdamW([{"params": [used, unused], "weight_decay": 0.0}], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    (used * 2).sum().backward()
    optimizer.step()
    assert torch.all(used < 1) and torch.equal(unused.detach(), torch.ones(2))


# ------------------------------------------------------------------ profiler


def test_token_counter_counts_real_tokens_only() -> None:
    counter = TokenCounter()
    counter.add({"input_ids": torch.zeros(2, 8, dtype=torch.long),
                 "attention_mask": torch.tensor([[1] * 5 + [0] * 3, [1] * 8])})
    assert (counter.samples, counter.tokens) == (2, 13)


def test_step_clock_and_steady_state_on_cpu() -> None:
    profiler = StepProfiler(TokenCounter(), warmup_steps=2)
    profiler.clock = _StepClock(cuda=False)
    profiler.clock.intervals_s = [3.0, 0.5, 0.1, 0.1, 0.12, 0.1]
    timing = profiler.timing()
    assert timing["steady_step_time_s"] == pytest.approx(0.1)
    assert timing["compile_time_s"] == pytest.approx(2.9 + 0.4)


def test_memory_summary_on_cpu_names_the_device() -> None:
    from jobs.profiler import memory_summary

    if torch.cuda.is_available():
        pytest.skip("CPU-only expectation")
    assert memory_summary()["device_name"] == "cpu"


def test_kernel_table_is_sorted_csv(tmp_path: Path) -> None:
    from jobs.profiler import write_kernel_table

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(3):
            torch.randn(64, 64) @ torch.randn(64, 64)
    write_kernel_table(profile.key_averages(), tmp_path / "kernels.csv", cuda=False, top=5)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "kernels.csv").read_text())))
    assert 0 < len(rows) <= 5
    times = [float(row["self_time_us"]) for row in rows]
    assert times == sorted(times, reverse=True)


# ------------------------------------------------------------------ training arguments


def test_knobs_map_to_transformers_5_arguments(tiny: Callable[..., TrainConfig], tmp_path: Path) -> None:
    train = tiny(warmup=0.1, lr_scheduler="cosine", gradient_checkpointing=True, optimizer="adamw_8bit",
                 compile={"enabled": True, "backend": "aot_eager", "mode": "reduce-overhead"})
    args = build_training_arguments(train, tmp_path, cuda=False)
    assert args.warmup_steps == 0.1 and args.lr_scheduler_type == "cosine"
    assert getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", None)
    assert args.optim == "adamw_bnb_8bit"
    assert (args.torch_compile, args.torch_compile_backend, args.torch_compile_mode) == (True, "aot_eager", "reduce-overhead")
    assert args.use_cpu and not args.logging_nan_inf_filter and args.report_to in ("none", ["none"], [])
    assert args.save_total_limit == 2 and args.seed == train.seed
    assert build_training_arguments(tiny(warmup=30), tmp_path, cuda=False).warmup_steps == 30
