"""A run that asked for a GPU gets one or fails with no_gpu: the worker's check (jobs/gpu.py) and the
local queue's placement rule (orchestrator/backends/local/gpus.py), on this CPU machine."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jobs.contract import Resources, RunSpec, TrainConfig
from jobs.failures import classify_exception
from jobs.gpu import NoGPUError, cuda_needs, require_cuda
from orchestrator.backends.local import gpus as localgpu

NO_CUDA = {"torch_cuda": "13.0", "available": False, "device_count": 0, "error": None}
ONE_GPU = {"torch_cuda": "13.0", "available": True, "device_count": 1, "error": None}


def _spec(gpus: int = 0, cuda_required: bool | None = None, **train: object) -> RunSpec:
    return RunSpec(experiment="e", run_name="r", base_name="r", run_id="r-0", series="r", config_hash="0",
                   train=TrainConfig(**train), resources=Resources(gpus=gpus), cuda_required=cuda_required)


def test_a_gpu_run_without_cuda_fails_naming_what_needs_it_and_the_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(NoGPUError) as caught:
        require_cuda(_spec(gpus=1, precision="fp16"), NO_CUDA)
    message = str(caught.value)
    assert "resources.gpus: 1" in message and "precision: fp16" in message
    assert "CUDA_VISIBLE_DEVICES=''" in message and "0 CUDA device(s) visible, 1 needed" in message
    reason, hint = classify_exception(caught.value)
    assert reason == "no_gpu" and "nvidia-smi" in hint


def test_the_cpu_opt_in_covers_knobs_only_and_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATE_GPU_KNOBS_ON_CPU", "1")
    warnings = require_cuda(_spec(gpus=0, optimizer="adamw_8bit"), NO_CUDA)
    assert warnings == [("GPU-only settings ran on the CPU on purpose (ORCHESTRATE_GPU_KNOBS_ON_CPU=1): "
                         "optimizer: adamw_8bit")]
    with pytest.raises(NoGPUError):  # a run that asked for a GPU never runs on the CPU
        require_cuda(_spec(gpus=1, optimizer="adamw_8bit"), NO_CUDA)


@pytest.mark.parametrize("knobs", [{"precision": "bf16"}, {"optimizer": "adamw_fused"}, {"optimizer": "adamw_8bit"},
                                   {"quantization": {"bits": 4}, "lora": {"r": 4}}])
def test_gpu_only_knobs_need_cuda_even_with_no_gpus_asked(knobs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHESTRATE_GPU_KNOBS_ON_CPU", raising=False)
    with pytest.raises(NoGPUError):
        require_cuda(_spec(gpus=0, **knobs), NO_CUDA)


def test_a_cpu_build_of_torch_and_too_few_devices_are_said_plainly() -> None:
    with pytest.raises(NoGPUError, match="CPU build"):
        require_cuda(_spec(gpus=1), {**NO_CUDA, "torch_cuda": None})
    with pytest.raises(NoGPUError, match="1 CUDA device.s. visible, 2 needed"):
        require_cuda(_spec(gpus=2), ONE_GPU)


def test_what_needs_no_cuda_passes() -> None:
    require_cuda(_spec(gpus=0), NO_CUDA)  # fp32 on the CPU, as asked
    require_cuda(_spec(gpus=1), ONE_GPU)
    # a partition the profile declares as not CUDA (the test cluster's fake gres)
    assert cuda_needs(_spec(gpus=1, cuda_required=False)) == []
    require_cuda(_spec(gpus=1, cuda_required=False), NO_CUDA)


def test_an_older_spec_without_cuda_required_counts_gpus() -> None:
    assert cuda_needs(_spec(gpus=1)) == ["resources.gpus: 1"]


def _fake_nvidia_smi(folder: Path, lines: str) -> None:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'END'\n{lines}\nEND\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_discovery_prefers_the_environment_then_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert localgpu.discover({"CUDA_VISIBLE_DEVICES": "2,GPU-aa11"})[0] == ["2", "GPU-aa11"]
    assert localgpu.discover({"CUDA_VISIBLE_DEVICES": ""})[0] == []  # hidden on purpose
    assert localgpu.discover({"CUDA_VISIBLE_DEVICES": "NoDevFiles"})[0] == []  # SLURM: no GPU allocated
    _fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H200 (UUID: GPU-1)\n  MIG 1g.18gb Device 0: (UUID: MIG-9)\n"
                               "GPU 1: NVIDIA H200 (UUID: GPU-2)")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    devices, how = localgpu.discover({})
    assert devices == ["0", "1"] and "nvidia-smi" in how
    monkeypatch.setenv("PATH", "/nonexistent")
    assert localgpu.discover({}) == ([], "no nvidia-smi (FileNotFoundError) and CUDA_VISIBLE_DEVICES unset")


def test_each_run_gets_its_own_gpu_and_the_others_wait() -> None:
    pool = localgpu.GpuPool(["0", "1"])
    assert pool.take("a", 1) == ["0"]
    assert pool.take("b", 1) == ["1"]
    assert pool.take("c", 1) is None  # waits: both GPUs busy
    assert pool.take("cpu", 0) == []  # a CPU run never waits for a GPU and sees none
    pool.release("a")
    assert pool.take("c", 1) == ["0"]
    assert pool.take("big", 2) is None  # waits for two free GPUs
    pool.release("b"), pool.release("c")
    assert pool.take("big", 2) == ["0", "1"]


def test_sharing_is_bounded_and_a_request_beyond_the_machine_starts_to_fail_loudly() -> None:
    pool = localgpu.GpuPool(["0"], runs_per_gpu=2)
    assert pool.take("a", 1) == ["0"] and pool.take("b", 1) == ["0"] and pool.take("c", 1) is None
    assert localgpu.GpuPool([]).take("x", 1) == []  # no GPU here: starts, and the worker fails with no_gpu
    assert localgpu.GpuPool(["0"]).take("x", 2) == ["0"]


def test_a_local_job_sees_exactly_its_devices_and_not_the_allocation() -> None:
    lines = localgpu.job_environment_lines(["GPU-1", "3"], "nvidia-smi -L listed 4 GPU(s)")
    assert lines[0] == "export CUDA_VISIBLE_DEVICES=GPU-1,3"
    assert localgpu.job_environment_lines([], "x")[0] == "export CUDA_VISIBLE_DEVICES=''"
    names = localgpu.scheduler_job_variables({"SLURM_JOB_ID": "23", "SLURM_CONF": "/etc/x", "HOME": "/root"})
    assert names == ["SLURM_JOB_ID"]
