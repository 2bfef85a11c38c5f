"""What a run cost: step times, compile time, real-token throughput, VRAM and energy.

:class:`StepProfiler` is a TrainerCallback (the optimum-benchmark shape: the Trainer
is handed a step-latency callback wrapped in memory and energy trackers).

* Step times come from CUDA events recorded at each step end (no host sync while
  training: finished events are read with the non-blocking ``query()``); on the
  CPU, from the host clock. The interval between step ends covers everything a
  step costs (data loading, forward, backward, optimizer).
* ``steady_step_time_s`` is the median interval after ``warmup_steps`` steps;
  ``compile_time_s`` is what the early steps took beyond that (torch.compile's
  first compilation and its recompilations for new shapes).
* Peak VRAM over training, and over ONE step after one warm-up step, measured as
  study 1 did (``max_memory_allocated`` / ``max_memory_reserved`` around step 2).
* Real tokens (attention-mask ones, not padding) are counted on the device by
  :class:`TokenCounter` without syncing; read once at the end.
* Energy from NVML's energy counter when pynvml is importable.
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from jobs.contract import KERNELS_FILE, TRACE_FILE, write_text_atomic

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


class TokenCounter:
    """Samples (host ints), real tokens and the sum of training losses (device tensors:
    adding needs no sync)."""

    def __init__(self) -> None:
        self.samples = 0
        self._tokens: torch.Tensor | int = 0
        self._loss_sum: torch.Tensor | float = 0.0

    def add_loss(self, loss: torch.Tensor) -> None:
        """Add one micro-batch's loss as the Trainer adds it to its running training loss."""
        self._loss_sum = self._loss_sum + loss.detach().float()

    @property
    def loss_sum(self) -> float:
        return float(self._loss_sum)

    def add(self, inputs: dict[str, Any]) -> None:
        """Count one micro-batch: its rows, and its non-padding tokens."""
        input_ids = inputs.get("input_ids")
        if input_ids is None:
            return
        lengths = inputs.get("feature_length")  # packed rows (jobs.packing): count features, not rows
        if lengths is not None:
            self.samples += int(lengths.shape[0])
            self._tokens = self._tokens + lengths.sum()
            return
        self.samples += int(input_ids.shape[0])
        mask = inputs.get("attention_mask")
        count = mask.sum() if mask is not None else input_ids.numel()
        self._tokens = self._tokens + count

    def snapshot(self) -> tuple[int, torch.Tensor | int]:
        """(samples, tokens) so far, the tokens still on the device."""
        tokens = self._tokens.clone() if isinstance(self._tokens, torch.Tensor) else self._tokens
        return self.samples, tokens

    @property
    def tokens(self) -> int:
        return int(self._tokens)


class _EnergyMeter:
    """NVML total-energy counter of the current CUDA device; inert when unavailable."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._start_mj: int | None = None
        self.energy_j: float | None = None
        if not torch.cuda.is_available():
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = torch.cuda._get_nvml_device_index(torch.cuda.current_device())
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self._read()
        except Exception as error:  # noqa: BLE001 - no pynvml, no permission, unsupported GPU
            logger.info("no NVML energy counter: %s", error)
            self._handle = None

    def start(self) -> None:
        if self._handle is not None:
            self._start_mj = self._read()

    def stop(self) -> None:
        self.energy_j = self.so_far()

    def so_far(self) -> float | None:
        """Joules since :meth:`start`, or None without a counter."""
        if self._handle is None or self._start_mj is None:
            return None
        return (self._read() - self._start_mj) / 1000.0


class _StepClock:
    """Step-end timestamps: CUDA events resolved lazily, or the host clock on the CPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.intervals_s: list[float] = []
        self._pending: list[Any] = []
        self._last: Any = None

    def mark(self) -> None:
        if not self.cuda:
            now = time.perf_counter()
            if self._last is not None:
                self.intervals_s.append(now - self._last)
            self._last = now
            return
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._pending.append(event)
        self._resolve(block=False)

    def _resolve(self, block: bool) -> None:
        while self._pending and (block or self._pending[0].query()):
            event = self._pending.pop(0)
            if block:
                event.synchronize()
            if self._last is not None:
                self.intervals_s.append(self._last.elapsed_time(event) / 1000.0)
            self._last = event

    def finish(self) -> None:
        if self.cuda:
            self._resolve(block=True)


class StepProfiler(TrainerCallback):
    """Collects the ``train`` timing fields and the ``memory`` / ``energy`` sections."""

    def __init__(self, counter: TokenCounter | None = None, warmup_steps: int = 10) -> None:
        self.counter = counter or TokenCounter()
        self.warmup_steps = warmup_steps
        self.cuda = torch.cuda.is_available()
        self.clock = _StepClock(self.cuda)
        self.energy = _EnergyMeter()
        self.steps = 0
        self.memory: dict[str, Any] = {}
        self._peak_before_step: tuple[int, int] = (0, 0)
        self._window_start: tuple[int, torch.Tensor | int] | None = None
        self._train_start = self._train_end = 0.0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.energy.start()
        self._train_start = time.perf_counter()
        self.clock.mark()

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.cuda and self.steps == 1:  # one warm-up step done: measure the next one alone
            self._peak_before_step = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved())
            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.steps += 1
        self.clock.mark()
        if self.cuda and self.steps == 2:
            self.memory["step_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / MIB
            self.memory["step_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / MIB
        if self.steps == self.warmup_steps:
            self._window_start = self.counter.snapshot()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.clock.finish()
        if self.cuda:
            torch.cuda.synchronize()
        self._train_end = time.perf_counter()
        self.energy.stop()
        self.memory.update(memory_summary(self._peak_before_step))

    # ------------------------------------------------------------------ summaries

    def timing(self) -> dict[str, Any]:
        """compile_time_s, steady_step_time_s and the steady-state rates (after warm-up)."""
        intervals = self.clock.intervals_s
        if not intervals:
            return {"compile_time_s": None, "steady_step_time_s": None}
        steady = intervals[self.warmup_steps:] if len(intervals) > self.warmup_steps + 1 else intervals[len(intervals) // 2:]
        step_s = statistics.median(steady)
        early = intervals[: len(intervals) - len(steady)]
        result: dict[str, Any] = {
            "compile_time_s": sum(max(0.0, value - step_s) for value in early),
            "steady_step_time_s": step_s,
        }
        if self._window_start is not None and len(intervals) > self.warmup_steps:
            window_s = sum(intervals[self.warmup_steps:])
            samples0, tokens0 = self._window_start
            result["steady_samples_per_s"] = (self.counter.samples - samples0) / window_s
            result["steady_tokens_per_s"] = (self.counter.tokens - int(tokens0)) / window_s
        return result

    def attempt_figures(self) -> dict[str, Any]:
        """This attempt's figures so far, in :mod:`jobs.accounting`'s shape (mid-run at a
        save, or after training); ``{"steps": 0}`` when it ran no training step."""
        if not self.steps:
            return {"steps": 0}
        self.clock.finish()
        ended = self._train_end or time.perf_counter()
        return {
            "steps": self.steps, "loss_sum": self.counter.loss_sum, "samples": self.counter.samples,
            "real_tokens": self.counter.tokens, "runtime_s": ended - self._train_start, "segment": self.timing(),
            "memory": {**self.memory, **memory_summary(self._peak_before_step)},
            "energy_j": self.energy.energy_j if self._train_end else self.energy.so_far(),
        }


def memory_summary(peak_before_step: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """Peak VRAM over training (including before the measured step) and the device."""
    if not torch.cuda.is_available():
        return {"peak_allocated_mib": None, "peak_reserved_mib": None, "device_total_mib": None, "device_name": "cpu"}
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "peak_allocated_mib": max(peak_before_step[0], torch.cuda.max_memory_allocated()) / MIB,
        "peak_reserved_mib": max(peak_before_step[1], torch.cuda.max_memory_reserved()) / MIB,
        "device_total_mib": properties.total_memory / MIB,
        "device_name": properties.name,
    }


class KernelProfiler(TrainerCallback):
    """``profile: true``: a torch.profiler window over a few steps after warm-up.

    Writes ``kernels.csv`` (top operators/kernels by self device time, or self CPU
    time on the CPU) and a Chrome trace ``trace.json`` (open in chrome://tracing or
    https://ui.perfetto.dev) into ``out_dir``.
    """

    def __init__(self, out_dir: Path, wait_steps: int = 3, active_steps: int = 3, top: int = 50) -> None:
        self.out_dir = out_dir
        self.top = top
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.cuda = torch.cuda.is_available()
        self._profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=wait_steps, warmup=1, active=active_steps, repeat=1),
            on_trace_ready=self._save,
        )
        self.saved = False

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._profiler.start()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._profiler.step()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._profiler.stop()

    def _save(self, profiler: Any) -> None:
        profiler.export_chrome_trace(str(self.out_dir / TRACE_FILE))
        write_kernel_table(profiler.key_averages(), self.out_dir / KERNELS_FILE, self.cuda, self.top)
        self.saved = True


def write_kernel_table(averages: Any, path: Path, cuda: bool, top: int) -> None:
    """Top ``top`` entries as CSV: on CUDA the kernels (and copies) by self device time,
    on the CPU the operators by self CPU time; the profiler's step markers left out."""
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = [
        event for event in averages
        if getattr(event, key, 0) > 0 and not str(event.key).startswith("ProfilerStep")
        and (not cuda or getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA)
    ]
    rows.sort(key=lambda event: getattr(event, key), reverse=True)
    total_us = sum(getattr(event, key) for event in rows) or 1.0
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "calls", "self_time_us", "self_time_pct"])
    for event in rows[:top]:
        self_us = getattr(event, key)
        writer.writerow([event.key, event.count, f"{self_us:.1f}", f"{100 * self_us / total_us:.2f}"])
    write_text_atomic(path, buffer.getvalue())
