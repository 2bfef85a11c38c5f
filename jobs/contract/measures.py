"""What a run measures and reports besides its task metrics: the latency knob and result.json's
``latency_ms`` section, and the names of ``report_to``'s targets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.contract.base import Strict

REPORT_TARGETS = ("tensorboard", "wandb")  # report_to's names (jobs/reporting.py)
ReportTarget = Literal["tensorboard", "wandb"]


class LatencyConfig(Strict):
    """Inference latency on the evaluation features (jobs/latency.py), at batch 1 and at
    ``eval_batch_size``: ``warmup`` untimed batches, then ``batches`` timed ones each (cycling over
    the evaluation set). ``latency: true`` in YAML means these defaults."""

    batches: int = Field(50, ge=1, le=10_000, description="timed batches a batch size")
    warmup: int = Field(5, ge=0, le=1_000, description="untimed batches first (allocator, kernels, caches)")


class LatencyPercentiles(BaseModel):
    """One batch size's forward-pass latency in milliseconds over the timed batches."""

    model_config = ConfigDict(extra="allow")

    p50: float = Field(description="median, ms")
    p95: float = Field(description="95th percentile (linear interpolation), ms")


class LatencyMs(BaseModel):
    """result.json ``latency_ms``: a figure that was not measured is null and named in ``unmeasured``."""

    model_config = ConfigDict(extra="allow")

    batch_1: LatencyPercentiles | None = None
    batch_N: LatencyPercentiles | None = None  # N: the run's eval_batch_size, as in the tables
    batch_size: int = Field(description="N: the run's eval_batch_size")
    device: str = Field(description="where it ran: cpu, cuda:0 (with the GPU's name when CUDA)")
    batches: int = Field(description="timed batches a batch size")
    warmup: int = Field(description="untimed batches before them")
    unmeasured: dict[str, str] = Field(default_factory=dict, description="figure -> why it is null")
