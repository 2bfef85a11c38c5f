"""A run that asked for a GPU trains on one, or fails at once saying why.

The transformers Trainer quietly trains on the CPU when CUDA is not available (``use_cpu``),
and a job can lose its GPU in many ways: a local executor that hides the devices
(submitit's LocalExecutor sets ``CUDA_VISIBLE_DEVICES=""`` unless told otherwise), a
partition without the gres, a CPU build of torch, a driver that does not match. So before
anything is tokenised the worker checks what the run needs against what this process sees,
and fails with reason ``no_gpu`` naming the visible-device variables.

What needs CUDA (:func:`cuda_needs`): ``resources.gpus >= 1`` (unless the cluster profile
declared that partition's GPUs as not CUDA, recorded at submit as ``spec.cuda_required:
false``), and the GPU-only knobs: fp16/bf16 mixed precision, the fused and the 8-bit
optimizers, a quantised base model.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from jobs.contract import LOCAL_GPUS_VARIABLE, RunSpec

# Variables that decide which GPUs a process sees (CUDA, containers, SLURM, ROCm), and what the local queue found.
VISIBLE_DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS",
                            "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES", LOCAL_GPUS_VARIABLE)

NO_GPU_HINT = ("give the job a GPU: on SLURM a GPU partition with resources.gpus >= 1 (check `sinfo -o '%P %G'`); "
               "with the local executor a machine where `nvidia-smi -L` lists a GPU and CUDA_VISIBLE_DEVICES is not "
               "empty; a CUDA build of torch. Or ask for none: resources.gpus: 0, precision: fp32, optimizer: adamw")


logger = logging.getLogger(__name__)

# Opt-in for the CPU tests of the GPU-only knobs' logic (8-bit optimizer, quantisation, autocast): recorded.
CPU_OPT_IN = "ORCHESTRATE_GPU_KNOBS_ON_CPU"


class NoGPUError(RuntimeError):
    """The run needs CUDA and this process sees no usable CUDA device."""


def cuda_needs(spec: RunSpec) -> list[str]:
    """The spec's settings that need a CUDA device, as ``key: value`` strings; empty if none."""
    train, needs = spec.train, []
    gpus_need_cuda = spec.cuda_required if spec.cuda_required is not None else spec.resources.gpus >= 1
    if spec.resources.gpus >= 1 and gpus_need_cuda:
        needs.append(f"resources.gpus: {spec.resources.gpus}")
    if train.precision in ("fp16", "bf16"):
        needs.append(f"precision: {train.precision}")
    if train.optimizer in ("adamw_fused", "adamw_8bit"):
        needs.append(f"optimizer: {train.optimizer}")
    if train.quantization is not None:
        needs.append(f"quantization: {{bits: {train.quantization.bits}}}")
    return needs


def visible_devices(environ: dict[str, str] | None = None) -> str:
    """``NAME='value'`` for each visible-device variable (``unset`` when absent), for messages."""
    env = os.environ if environ is None else environ
    return ", ".join(f"{name}={env[name]!r}" if name in env else f"{name} unset" for name in VISIBLE_DEVICE_VARIABLES)


def cuda_state() -> dict[str, Any]:
    """What torch sees: whether CUDA works, the device count, torch's CUDA build and the error if any."""
    import torch

    state: dict[str, Any] = {"torch_cuda": torch.version.cuda, "available": False, "device_count": 0, "error": None}
    try:
        state["available"] = bool(torch.cuda.is_available())
        state["device_count"] = torch.cuda.device_count() if state["available"] else 0
        if state["available"]:
            torch.cuda.init()  # a driver/runtime mismatch shows here, not in is_available()
    except Exception as exc:  # noqa: BLE001 - any CUDA initialisation failure means no usable device
        state.update(available=False, device_count=0, error=f"{type(exc).__name__}: {exc}")
    return state


def require_cuda(spec: RunSpec, state: dict[str, Any] | None = None) -> list[str]:
    """Raise :class:`NoGPUError` when ``spec`` needs CUDA (:func:`cuda_needs`) and this process has none,
    or fewer devices than ``resources.gpus``. Returns the warnings for result.json: one when the GPU-only
    knobs run on the CPU on purpose (``ORCHESTRATE_GPU_KNOBS_ON_CPU=1``, for testing their logic on a
    machine without a GPU; never for a run that asked for ``gpus >= 1``)."""
    needs = cuda_needs(spec)
    if not needs:
        return []
    state = cuda_state() if state is None else state
    wanted = spec.resources.gpus if any(n.startswith("resources.gpus") for n in needs) else 1
    if state["available"] and state["device_count"] >= wanted:
        return []
    if os.environ.get(CPU_OPT_IN) == "1" and not any(n.startswith("resources.gpus") for n in needs):
        message = f"GPU-only settings ran on the CPU on purpose ({CPU_OPT_IN}=1): {', '.join(needs)}"
        logger.warning(message)
        return [message]
    if state["torch_cuda"] is None:
        seen = "this torch is a CPU build (torch.version.cuda is None)"
    elif state["error"]:
        seen = f"CUDA failed to initialise ({state['error']})"
    else:
        seen = f"{state['device_count']} CUDA device(s) visible, {wanted} needed"
    raise NoGPUError(f"the run needs a GPU ({', '.join(needs)}) but {seen}; {visible_devices()}")
