"""Trainer callbacks that keep the run directory current and stop a diverged run.

* :class:`RunDirCallback`: ``heartbeat.json`` (at most every ``interval_s``, and at
  the start, at checkpoints and at the end) and one ``metrics.jsonl`` line a
  logging step.
* :class:`FiniteLossGuard` + :class:`LossGuardCallback`: raise
  :class:`~jobs.failures.NonFiniteLossError` as soon as a training loss is NaN or
  infinite. Every step's loss is checked on the device (a running "any non-finite"
  flag) and copied to pinned host memory without blocking; the host reads that
  flag at each step end (no sync: since the flag only ever turns on, a late copy
  just delays detection by a step or two) and exactly at each logging step, where
  the Trainer syncs anyway. On the CPU each step is checked exactly.

* :class:`ResumableEarlyStopping`: HF's early stopping, whose count of evaluations
  without improvement survives a requeue (read back from the checkpoint's trainer state).

The Trainer's ``logging_nan_inf_filter`` must be off (``training_args`` does that): it
would replace a NaN loss by the running mean and hide it.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any

import torch
from transformers import EarlyStoppingCallback, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from jobs.contract import RunDir, append_jsonl
from jobs.failures import NonFiniteLossError


class FiniteLossGuard:
    """Running check that every training loss so far was finite."""

    def __init__(self) -> None:
        self._device_flag: torch.Tensor | None = None
        self._host_flag: torch.Tensor | None = None

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Record one micro-batch's loss (called from the training step)."""
        loss = loss.detach()
        if loss.device.type != "cuda":
            value = float(loss.float().mean())
            if not math.isfinite(value):
                raise NonFiniteLossError(step, value)
            return
        bad = ~torch.isfinite(loss).all()
        if self._device_flag is None:
            self._device_flag = bad.clone()
            self._host_flag = torch.zeros((), dtype=torch.bool, pin_memory=True)
        else:
            self._device_flag |= bad
        assert self._host_flag is not None
        self._host_flag.copy_(self._device_flag, non_blocking=True)

    def check(self, step: int, exact: bool = False) -> None:
        """Raise if a non-finite loss was seen; ``exact`` waits for the device first."""
        if self._host_flag is None:
            return
        if exact:
            torch.cuda.current_stream().synchronize()
        if bool(self._host_flag):
            raise NonFiniteLossError(step)


class LossGuardCallback(TrainerCallback):
    """Checks the guard each step and the logged loss each logging step."""

    def __init__(self, guard: FiniteLossGuard) -> None:
        self.guard = guard

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.guard.check(state.global_step)

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(state.global_step, float(loss))
        self.guard.check(state.global_step, exact=True)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.guard.check(state.global_step, exact=True)


class RunDirCallback(TrainerCallback):
    """Heartbeat and metrics log of one run directory."""

    def __init__(self, run_dir: RunDir, interval_s: float = 5.0) -> None:
        self.run_dir = run_dir
        self.interval_s = interval_s
        self.last_loss: float | None = None
        self._last_beat = 0.0
        # job id and attempt are carried over from the entry point's heartbeat by write_heartbeat
        self._identity = {"pid": os.getpid(), "hostname": socket.gethostname()}

    def beat(self, state: TrainerState, name: str = "training") -> None:
        """Write the heartbeat now."""
        self._last_beat = time.monotonic()
        self.run_dir.write_heartbeat(
            name, step=state.global_step, total_steps=state.max_steps, epoch=state.epoch,
            last_loss=self.last_loss, **self._identity,
        )

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.beat(state)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if time.monotonic() - self._last_beat >= self.interval_s:
            self.beat(state)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.beat(state)

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        logs = logs or {}
        if "loss" not in logs:
            return  # the end-of-training summary goes into result.json instead
        self.last_loss = float(logs["loss"])
        line: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, "time": time.time()}
        line.update({key: logs.get(key) for key in ("loss", "learning_rate", "grad_norm")})
        append_jsonl(self.run_dir.metrics_path, line)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.beat(state)


class ResumableEarlyStopping(EarlyStoppingCallback):
    """HF's early stopping (improvement: better than the best so far by more than ``min_delta``), its
    patience count restored from a resumed checkpoint's trainer state. HF restores callback states only
    with ``restore_callback_states_from_checkpoint``, which would also restore the saved
    ``TrainerControl`` flags; this restores the count alone."""

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        super().on_train_begin(args, state, control, **kwargs)
        callbacks: Any = state.stateful_callbacks or {}  # a dict once loaded from a checkpoint
        stored = callbacks.get(type(self).__name__) if isinstance(callbacks, dict) else None
        if isinstance(stored, dict):
            counter = stored.get("attributes", {}).get("early_stopping_patience_counter")
            if isinstance(counter, int):
                self.early_stopping_patience_counter = counter
