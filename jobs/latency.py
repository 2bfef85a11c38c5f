"""Inference latency on the evaluation set: result.json's ``latency_ms`` (``latency:`` knob).

    section = measure_latency(trainer, eval_features, train.latency, train.eval_batch_size, non_model_columns)

For batch size 1 and N (the run's ``eval_batch_size``): ``warmup`` untimed forward passes, then
``batches`` timed ones, each on the next batch of the evaluation features (cycling when the set
has fewer batches; the last, partial batch is never used, so every timed batch has exactly the
batch size). A timed pass is ``Trainer.prediction_step`` as evaluation runs it (the batch's copy
to the device included, collation excluded: batches are collated before timing) on the run's
device, without labels (no loss). On CUDA the device is synchronised before and after each pass,
so each figure is the wall time of that pass alone. Figures are p50 and p95 (linear
interpolation) in milliseconds. A batch size the evaluation set cannot fill once is not
measured: its figure is null and ``unmeasured`` says why.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from jobs.contract import LatencyConfig, LatencyMs, LatencyPercentiles

logger = logging.getLogger(__name__)

# label columns of the tasks' features: dropped so that a timed pass computes no loss
_LABEL_COLUMNS = ("label", "labels", "start_positions", "end_positions")


def measure_latency(trainer: Trainer, features: datasets.Dataset, config: LatencyConfig, batch_size: int,
                    non_model_columns: Iterable[str] = ()) -> dict[str, Any]:
    """result.json's ``latency_ms`` for ``trainer.model`` on ``features`` (the tokenised evaluation set):
    ``{batch_1: {p50, p95}, batch_N: {p50, p95}, batch_size: N, device, batches, warmup, unmeasured}``,
    figures in ms, None where not measured (named in ``unmeasured``)."""
    dropped = {*non_model_columns, *_LABEL_COLUMNS, *(trainer.label_names or [])}
    inputs = features.remove_columns([column for column in features.column_names if column in dropped])
    inputs = trainer._remove_unused_columns(inputs, description="latency")
    model = trainer.model
    assert model is not None  # a Trainer always holds its model
    model.eval()
    figures: dict[str, LatencyPercentiles | None] = {}
    unmeasured: dict[str, str] = {}
    for key, size in (("batch_1", 1), ("batch_N", batch_size)):
        if len(inputs) < size:
            figures[key] = None
            unmeasured[key] = (f"the evaluation set has {len(inputs)} features, fewer than one batch of "
                               f"{size} (eval_batch_size)")
            continue
        times_ms = _time_batches(trainer, model, _collated(trainer, inputs, size, config.warmup + config.batches),
                                 config.warmup)
        figures[key] = percentiles(times_ms)
    device = trainer.args.device
    section = LatencyMs(batch_1=figures["batch_1"], batch_N=figures["batch_N"], batch_size=batch_size, device=_device_name(device), batches=config.batches,
                        warmup=config.warmup, unmeasured=unmeasured)
    logger.info("latency (ms): %s", section.model_dump(mode="json"))
    return section.model_dump(mode="json")


def percentiles(times_ms: Sequence[float]) -> LatencyPercentiles:
    """p50 and p95 of ``times_ms`` (linear interpolation between the closest ranks)."""
    p50, p95 = np.percentile(np.asarray(times_ms, dtype=np.float64), [50, 95])
    return LatencyPercentiles(p50=float(p50), p95=float(p95))


def _collated(trainer: Trainer, inputs: datasets.Dataset, size: int, count: int) -> list[dict[str, Any]]:
    """``count`` full batches of ``size`` features, collated, cycling over the set."""
    loader = DataLoader(inputs, batch_size=size, shuffle=False, drop_last=True,  # type: ignore[arg-type]
                        collate_fn=trainer.data_collator)
    full = list(itertools.islice(loader, count))
    return [full[index % len(full)] for index in range(count)]


def _time_batches(trainer: Trainer, model: torch.nn.Module, batches: list[dict[str, Any]], warmup: int) -> list[float]:
    """Milliseconds of each forward pass after the first ``warmup``."""
    cuda = trainer.args.device.type == "cuda"
    times_ms: list[float] = []
    with torch.inference_mode():
        for index, batch in enumerate(batches):
            if cuda:
                torch.cuda.synchronize(trainer.args.device)  # nothing earlier inside the timed span
            started = time.perf_counter()
            trainer.prediction_step(model, batch, prediction_loss_only=False)
            if cuda:
                torch.cuda.synchronize(trainer.args.device)  # the pass's kernels, not just their launch
            if index >= warmup:
                times_ms.append((time.perf_counter() - started) * 1000.0)
    return times_ms


def _device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
