"""Diagnostics for ``benchmarks/trainer.py``: a host-side cProfile of the steady steps, the
torch.profiler files of a ``profile: true`` recipe, and a GPU smoke run of the whole
``run_training`` path (data, feature cache, train, evaluate, profiler window)."""

from __future__ import annotations

import argparse
import cProfile
import gzip
import io
import pstats
import shutil
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from jobs.contract import Resources, RunDir, RunSpec, TrainConfig
from jobs.flat_optim import FlatAdamW
from jobs.profiler import KernelProfiler
from jobs.spec_trainer import SpecTrainer
from jobs.trainer import run_training


class _PythonProfile(TrainerCallback):
    """cProfile of the training loop's host side over the steady-state steps."""

    def __init__(self, start_step: int, path: Path) -> None:
        self.start_step, self.path, self.profile = start_step, path, cProfile.Profile()
        self.steps = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps += 1
        if self.steps == self.start_step:
            self.profile.enable()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.profile.disable()
        buffer = io.StringIO()
        stats = pstats.Stats(self.profile, stream=buffer)
        stats.sort_stats("tottime").print_stats(45)
        stats.sort_stats("cumulative").print_stats(60)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(buffer.getvalue(), encoding="utf-8")


def extra_callbacks(name: str, args: argparse.Namespace) -> list[TrainerCallback]:
    callbacks: list[TrainerCallback] = []
    if args.cprofile is not None:
        callbacks.append(_PythonProfile(args.warmup, args.cprofile / f"{name}-b{args.batch_size}.prof.txt"))
    if name.endswith("-kprof"):  # steady-state kernels: the window opens after the warm-up steps
        folder = (args.out.parent if args.out else Path(".")) / f"{name}-b{args.batch_size}"
        folder.mkdir(parents=True, exist_ok=True)
        callbacks.append(KernelProfiler(folder, wait_steps=args.warmup))
    return callbacks


@contextmanager
def clip_pass(enabled: bool) -> Iterator[None]:
    """The flat optimizer's clipping as it was before the clip factor moved into the fused step: the
    factor applied to the flat gradients by a pass of its own (``clip_grad_norm_``); for ``-clippass``."""
    if not enabled:
        yield
        return
    original = FlatAdamW.clip_grad_norm

    def clip_grad_norm(self: FlatAdamW, max_norm: float) -> torch.Tensor:
        self.gather_grads()
        return torch.nn.utils.clip_grad_norm_(self.masters(), max_norm)

    FlatAdamW.clip_grad_norm = clip_grad_norm  # type: ignore[method-assign]
    try:
        yield
    finally:
        FlatAdamW.clip_grad_norm = original  # type: ignore[method-assign]


@contextmanager
def compiled_autograd(enabled: bool) -> Iterator[None]:
    """An experiment for the host-bound small-batch step (issue 13), benchmark only: each training
    step's backward traced by torch's compiled autograd (``torch._dynamo.compiled_autograd``, a
    private API) and compiled by inductor under CUDA graphs, so the gradient accumulation into the
    ~200 parameters' ``.grad`` joins the recorded graph instead of running op by op on the host."""
    if not enabled:
        yield
        return
    from torch._dynamo import compiled_autograd as autograd_compiler

    def compiler(graph: torch.fx.GraphModule) -> Any:
        return torch.compile(graph, backend="inductor", mode="reduce-overhead", dynamic=True)

    original = SpecTrainer.training_step

    def training_step(self: SpecTrainer, model: torch.nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: Any = None) -> torch.Tensor:
        with autograd_compiler._enable(compiler):
            return original(self, model, inputs, num_items_in_batch)

    SpecTrainer.training_step = training_step  # type: ignore[method-assign]
    try:
        yield
    finally:
        SpecTrainer.training_step = original  # type: ignore[method-assign]
        from torch._dynamo.utils import counters

        print(f"compiled autograd counters: {dict(counters['compiled_autograd'])}", flush=True)


def keep_profile_files(name: str, run_dir: Path, args: argparse.Namespace) -> None:
    """Copy a recipe's kernels.csv and (gzipped) trace.json next to --out."""
    if args.out is None or not (run_dir / "kernels.csv").exists():
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "kernels.csv", args.out.parent / f"{name}-kernels.csv")
    with open(run_dir / "trace.json", "rb") as source, gzip.open(args.out.parent / f"{name}-trace.json.gz", "wb") as target:
        shutil.copyfileobj(source, target)




def smoke_run_training(out_dir: Path, model_path: Path) -> None:
    """The whole production path (data, feature cache, train, eval, profiler window) on
    the GPU with a small model: fp16 + dynamic padding + bucketing, and QLoRA 4-bit."""
    common = {"model_name_or_path": str(model_path), "random_init": True, "max_seq_length": 128, "doc_stride": 32,
              "data": {"synthetic": {"n_train": 400, "n_eval": 64}, "cache_dir": str(out_dir / "cache")},
              "max_steps": 30, "logging_steps": 10, "save_steps": 20, "batch_size": 16}
    variants = {
        "fp16-bucketed-profiled": {"precision": "fp16", "padding": "dynamic", "bucketing": True,
                                   "optimizer": "adamw_fused", "profile": True,
                                   "latency": {"batches": 20, "warmup": 5}},
        "qlora-4bit-bf16": {"precision": "bf16", "quantization": {"bits": 4}, "lora": {"r": 8},
                            "learning_rate": 1e-3},
        "lora-8bit-fp16": {"precision": "fp16", "quantization": {"bits": 8}, "lora": {"r": 8}},
    }
    for name, overrides in variants.items():
        train = TrainConfig(**{**common, **overrides})
        spec = RunSpec(experiment="smoke", run_name=name, base_name=name, run_id=name, series="smoke",
                       config_hash="0", train=train, resources=Resources(gpus=1))
        run_dir = RunDir(out_dir / "runs" / name)
        run_dir.path.mkdir(parents=True, exist_ok=True)
        try:
            result = run_training(spec, run_dir)
            print(f"SMOKE {name} ok: f1={result['metrics'].get('f1')} steps={result['train']['steps']} "
                  f"memory={result['memory']} energy={result['energy']} params={result['params']} "
                  f"latency_ms={result.get('latency_ms')} "
                  f"files={sorted(p.name for p in run_dir.path.iterdir())}", flush=True)
        except Exception as error:  # noqa: BLE001 - report every variant
            print(f"SMOKE {name} FAILED: {error!r}\n{traceback.format_exc()[-2000:]}", flush=True)
