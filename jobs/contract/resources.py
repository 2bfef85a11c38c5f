"""What a job asks the scheduler for (``Resources``), what a partition offers (``DeviceInfo``), and
the static compatibility rules between the knobs and that hardware (``check_compat``)."""

from __future__ import annotations

import hashlib
import re

from pydantic import Field, field_validator

from jobs.contract.base import Strict, canonical_json
from jobs.contract.knobs import TrainConfig

# Set by the local queue in each job's environment: the GPUs it found on the machine and how
# (orchestrator/backends/local/gpus.py), so that a no_gpu failure can say what the queue saw.
LOCAL_GPUS_VARIABLE = "ORCHESTRATE_LOCAL_GPUS"

_SLURM_WORD = re.compile(r"^[A-Za-z0-9_.:,+|&*\[\]-]{1,200}$")


class Resources(Strict):
    """What one job asks SLURM for. Runs with equal Resources share one job array."""

    partition: str | None = None
    gpus: int = Field(0, ge=0, le=16)
    gpu_type: str | None = None  # e.g. t4: --gres=gpu:t4:N
    cpus_per_task: int = Field(2, ge=1, le=512)
    mem_gb: float = Field(8, gt=0)
    time_min: int = Field(60, ge=1)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = Field(16, ge=1)
    signal_delay_s: int = Field(120, ge=10, description="USR2 this long before the time limit: checkpoint and requeue")
    max_requeues: int = Field(3, ge=0, description="timeouts/preemptions a run may be requeued after")

    @field_validator("partition", "gpu_type", "account", "qos", "constraint")
    @classmethod
    def _slurm_word(cls, value: str | None) -> str | None:
        if value is not None and not _SLURM_WORD.match(value):
            raise ValueError(f"{value!r} is not a valid SLURM name (letters, digits and _.:,+|&*[]- only)")
        return value

    def group_key(self) -> str:
        """Runs whose resources are equal go into one array."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()[:10]


class DeviceInfo(Strict):
    """What the target partition offers, from the cluster profile."""

    cuda: bool = True
    gpu_name: str = "unknown"
    gpu_mem_gb: float | None = None
    bf16: bool = True  # T4 (sm_75) has no bf16


def check_compat(train: TrainConfig, device: DeviceInfo, gpus: int) -> list[str]:
    """Problems of running ``train`` on ``device`` with ``gpus`` GPUs; empty if fine."""
    problems: list[str] = []
    has_cuda = device.cuda and gpus > 0
    if train.precision in ("fp16", "bf16") and not has_cuda:
        problems.append(f"precision {train.precision} needs a GPU; use precision: fp32 or ask for gpus >= 1")
    if train.precision == "bf16" and has_cuda and not device.bf16:
        problems.append(f"precision bf16 is not supported on {device.gpu_name}; use fp16")
    if train.quantization is not None:
        if not has_cuda:
            problems.append("quantization (QLoRA / 8-bit base) needs CUDA: ask for gpus >= 1 on a GPU partition")
        elif train.quantization.bits == 4 and train.quantization.compute_dtype == "bf16" and not device.bf16:
            # compute_dtype is bnb_4bit_compute_dtype: 8-bit loading (LLM.int8) does not use it
            problems.append(f"quantization.compute_dtype bf16 is not supported on {device.gpu_name}; use fp16")
    if train.optimizer == "adamw_fused" and not has_cuda:
        problems.append("optimizer adamw_fused needs CUDA; use adamw")
    if train.optimizer == "adamw_8bit" and not has_cuda:
        problems.append("optimizer adamw_8bit (bitsandbytes) needs CUDA here; use adamw")
    return problems
