"""The one shared trainer: a run spec in, the body of ``result.json`` out.

    result = run_training(spec, run_dir)

Steps: seed; load the tokenizer; load and tokenise the data (or reuse the study's
feature cache); load the model (attention, random init, quantisation) and apply the
methods (LoRA / QLoRA / BitFit / freeze); train with the transformers Trainer
(resuming from the newest sealed, verified checkpoint in ``run_dir/checkpoints``, see
:mod:`jobs.resume`); evaluate; return metrics, timings, parameters, memory and energy,
each the run's across all its attempts (:mod:`jobs.accounting`). Progress goes to the run
directory (heartbeat, metrics.jsonl) through callbacks.

:func:`build_session` is the same path without data loading and evaluation: the GPU
benchmark (``benchmarks/trainer.py``) trains through it on synthetic features.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import TrainerCallback, TrainerState, set_seed

from jobs import accounting, preemption
from jobs.adapter_analysis import write_adapter_analysis
from jobs.callbacks import FiniteLossGuard, LossGuardCallback, ResumableEarlyStopping, RunDirCallback
from jobs.contract import RunDir, RunSpec, TrainConfig, append_jsonl, read_jsonl, write_json_atomic
from jobs.curves import (
    CurveEvaluator,
    drop_evaluations_after,
    early_stopping_outcome,
    early_stopping_warnings,
    evaluation_time_s,
    loss_fields,
    stopped_early,
    train_sample,
)
from jobs.gpu import require_cuda
from jobs.latency import measure_latency
from jobs.methods import apply_methods, method_names
from jobs.model import load_model, load_tokenizer, parameter_counts, present_modules
from jobs.noise import noise_seed
from jobs.packing import PackingError, packing_problem, unwrap, use_varlen_attention, varlen_kernel_runs
from jobs.profiler import KernelProfiler, StepProfiler, TokenCounter
from jobs.reporting import Reporter, require_packages
from jobs.resume import ResumePoint, find_resume_point
from jobs.scores import teacher_subset, write_scores
from jobs.sources import Source, apply_source, export_model, initial_model, verified_source
from jobs.spec_trainer import SpecTrainer
from jobs.tasks import PreparedData, Task, get_task
from jobs.tasks.data import resolve_cache_dir
from jobs.training_args import build_training_arguments

logger = logging.getLogger(__name__)


@dataclass
class Session:
    """A Trainer wired to one run directory, with its profiler and token counter."""

    trainer: SpecTrainer
    profiler: StepProfiler
    counter: TokenCounter
    kernel_profiler: KernelProfiler | None = None
    run_dir: RunDir | None = None  # where rejected checkpoints are recorded (attempts.jsonl)
    resume_point: ResumePoint = field(default_factory=lambda: ResumePoint(None))
    prior: dict[str, Any] = field(default_factory=lambda: dict(accounting.EMPTY))  # steps 1..N of earlier attempts
    memory: dict[str, Any] = field(default_factory=dict)  # across attempts, set by train_session
    energy: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def figures_so_far(self) -> dict[str, Any]:
        """Earlier attempts' figures plus this one's (what a checkpoint saved now carries)."""
        return accounting.combine(self.prior, self.profiler.attempt_figures())


def build_model(train: TrainConfig, task: Task, source: Source | None = None) -> torch.nn.Module:
    """The task model, started from ``source`` (init_from) if given, with the spec's methods applied."""
    # Every head name the task knows stays out of quantisation (absent ones are harmless there).
    model: torch.nn.Module = load_model(train, task.model_class, dict(task.model_kwargs), task.head_modules)
    heads = present_modules(model, task.head_modules)
    if source is not None:
        trainable = train.init_from.trainable if train.init_from is not None else "all"
        model = apply_source(model, source, heads, trainable)
        if source.ref.take == "adapter" or trainable == "head":  # submit refuses methods of its own here
            return model
    return apply_methods(model, train, heads)


def build_session(
    train: TrainConfig,
    run_dir: RunDir,
    model: torch.nn.Module,
    tokenizer: Any,
    task: Task,
    train_features: datasets.Dataset,
    warmup_steps: int = 10,
    extra_callbacks: Sequence[TrainerCallback] = (),
    eval_features: datasets.Dataset | None = None,
) -> Session:
    """A SpecTrainer for ``train`` on ``train_features``, checkpointing into the run dir; with
    ``eval_strategy``, ``eval_features`` are the Trainer's eval set (the evaluation itself is the
    session's ``curve_evaluation``) and ``early_stopping`` adds its callback."""
    counter, guard = TokenCounter(), FiniteLossGuard()
    if train.dataloader_workers > 0:
        # Batches come back from the workers as shared-memory tensors; the default
        # strategy passes a file descriptor over a socket, with an authentication
        # handshake, for every tensor of every batch: ~1-2 ms of the host's time a
        # step, which bounds a small-batch GPU step. Named shared memory has no handshake.
        torch.multiprocessing.set_sharing_strategy("file_system")
    profiler = StepProfiler(counter, warmup_steps=warmup_steps)
    callbacks: list[TrainerCallback] = [RunDirCallback(run_dir), LossGuardCallback(guard), profiler]
    kernel_profiler = KernelProfiler(run_dir.path) if train.profile else None
    if kernel_profiler is not None:
        callbacks.append(kernel_profiler)
    callbacks.extend(extra_callbacks)
    if train.early_stopping is not None:
        callbacks.append(ResumableEarlyStopping(train.early_stopping.patience, train.early_stopping.min_delta))
    lengths = train_features["length"] if train.bucketing and len(train_features) else None  # none: zero-shot
    compile_mode = train.compile.mode if train.compile is not None and train.compile.enabled else None
    if compile_mode is not None:
        preemption.start_compile_workers()  # before the Trainer compiles: the pool must not die of SIGTERM
    trainer = SpecTrainer(
        model=model,
        args=build_training_arguments(train, run_dir.checkpoint_dir),
        train_dataset=train_features,
        eval_dataset=eval_features if train.eval_strategy is not None else None,
        data_collator=task.collator(tokenizer, train),
        processing_class=tokenizer,
        callbacks=callbacks,
        bucket_lengths=lengths,
        loss_guard=guard,
        token_counter=counter,
        cudagraph_steps=compile_mode == "reduce-overhead",
        dynamic_sequence=compile_mode is not None and train.padding == "dynamic",
        flat_optimizer=train.optimizer == "adamw_fused",
        packed_head=_packed_head(train, model, task),
    )
    session = Session(trainer, profiler, counter, kernel_profiler, run_dir)
    session.warnings.extend(_packed_attention(train, model))
    trainer.checkpoint_accounting = session.figures_so_far
    return session


def _packed_head(train: TrainConfig, model: torch.nn.Module, task: Task) -> str | None:
    """The packed head, ``qa`` or ``classification``, for ``padding: packed``, else None. Raises PackingError for a model
    without a packed head (before any step)."""
    if train.padding != "packed":
        return None
    problem = packing_problem(str(getattr(unwrap(model).config, "model_type", "")))
    if problem is not None:
        raise PackingError(problem)
    return "qa" if task.model_class_name == "AutoModelForQuestionAnswering" else "classification"


def _packed_attention(train: TrainConfig, model: torch.nn.Module) -> list[str]:
    """With ``padding: packed`` and ``packing_attention: varlen``, attend with the variable-length kernel
    (:func:`jobs.packing.varlen_attention`); otherwise (``mask``, ``auto`` or unset) the block mask, which measured
    as fast on an H200 (benchmarks/README.md). Returns the warnings for the result: ``varlen`` where the flash
    kernel cannot run (no CUDA device of compute capability 8.0+ in fp16/bf16: its per-segment path runs)."""
    if train.padding != "packed" or train.packing_attention != "varlen":
        return []
    half = torch.float16 if train.precision == "fp16" else torch.bfloat16
    kernel = (torch.cuda.is_available() and train.precision in ("fp16", "bf16")
              and varlen_kernel_runs(torch.device("cuda"), half))
    use_varlen_attention(model)
    logger.info("packed attention: variable-length flash attention" if kernel else
                "packed attention: one feature at a time (packing_attention: varlen where its kernel cannot run)")
    return [] if kernel else [("packing_attention: varlen without a CUDA device of compute capability 8.0+ in "
                                "fp16/bf16: the attention ran one feature at a time (the same maths, slower); use "
                                "packing_attention: mask there")]


def train_session(session: Session, resume: bool = True) -> dict[str, Any]:
    """Train (resuming from the newest trusted checkpoint); the ``train`` section of the result,
    its figures the run's across attempts (``session.memory`` / ``session.energy`` too)."""
    trainer = session.trainer
    point = find_resume_point(Path(trainer.args.output_dir or ".")) if resume else ResumePoint(None)
    checkpoint = point.checkpoint
    session.resume_point, session.prior = point, accounting.load(checkpoint)
    if session.run_dir is not None:  # recorded now: training may still fail
        for rejected in point.rejected:
            append_jsonl(session.run_dir.attempts_path,
                         {"event": "checkpoint_rejected", "time": time.time(), **rejected.as_record()})
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
        if session.run_dir is not None:
            drop_evaluations_after(session.run_dir, _checkpoint_step(checkpoint))
    finished = _finished_state(checkpoint)
    if finished is not None:
        # training ended in an earlier attempt (a requeue came during evaluation): Trainer.train
        # would take one step too many, so load the final weights (early stopping: the best) and evaluate
        trainer._load_from_checkpoint(str(checkpoint))
        trainer.state = finished
        if trainer.args.load_best_model_at_end and finished.best_model_checkpoint is not None:
            trainer._load_best_model()
    else:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    figures, session.memory, session.energy, warnings = accounting.summary(
        session.figures_so_far(), trainer.state.max_steps)
    session.warnings.extend(warnings)
    section: dict[str, Any] = {
        **figures,
        "steps": trainer.state.global_step,
        "planned_steps": trainer.state.max_steps,
        "resumed_from_step": _checkpoint_step(checkpoint) if checkpoint is not None else None,
    }
    if trainer.state.global_step < trainer.state.max_steps and not stopped_early(trainer.state):
        session.warnings.append(f"stopped at step {trainer.state.global_step} of {trainer.state.max_steps}")
    return section


def _finished_state(checkpoint: Path | None) -> TrainerState | None:
    """The checkpoint's trainer state if training had already ended: its last step, or stopped early
    (its early-stopping count reached the patience; the saved control's stop flag is no sign: a
    preemption sets it too)."""
    if checkpoint is None or not (checkpoint / "trainer_state.json").is_file():
        return None
    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return state if (state.max_steps and state.global_step >= state.max_steps) or stopped_early(state) else None


def _checkpoint_step(checkpoint: Path | None) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else 0


def run_training(
    spec: RunSpec, run_dir: RunDir, extra_callbacks: Sequence[TrainerCallback] = ()
) -> dict[str, Any]:
    """Train and evaluate the run ``spec`` describes; return the body of result.json.

    ``extra_callbacks`` go to the Trainer too (e.g. the entry point's preemption handler). However it
    ends, the run's data-loading worker processes end with it (:func:`jobs.preemption.end_loader_workers`).
    """
    try:
        return _train_and_evaluate(spec, run_dir, extra_callbacks)
    finally:
        ended = preemption.end_loader_workers()
        if ended:
            logger.debug("shut down the worker processes of %d data loader(s)", ended)


def _train_and_evaluate(spec: RunSpec, run_dir: RunDir, extra_callbacks: Sequence[TrainerCallback]) -> dict[str, Any]:
    train = spec.train
    task = get_task(train.task)
    device_warnings = require_cuda(spec)  # before any tokenising: a GPU run never falls back to the CPU
    require_packages(train.report_to)  # likewise: a missing tensorboard/wandb fails the run at its start
    source = verified_source(spec, run_dir)  # init_from: refused before any data is read
    chosen = teacher_subset(spec, run_dir)  # data.select_from: likewise
    set_seed(train.seed)
    run_dir.write_heartbeat("loading", step=0)
    tokenizer = load_tokenizer(train)
    data: PreparedData = task.prepare(train, tokenizer, resolve_cache_dir(train, run_dir), chosen)
    set_seed(train.seed)  # the head's initialisation must not depend on a cache hit
    model = build_model(train, task, source)
    write_data_files(train, run_dir, data)
    reporter = Reporter.start(spec, run_dir)
    session = build_session(train, run_dir, model, tokenizer, task, data.train_features,
                            extra_callbacks=[*extra_callbacks, preemption.make_callback(), *reporter.callbacks],
                            eval_features=data.eval_features)
    if train.eval_strategy is not None:
        session.trainer.curve_evaluation = CurveEvaluator(task, data, train, run_dir,
                                                          train_sample(task, data, train, tokenizer))
    session.warnings.extend(device_warnings)
    session.warnings.extend(data.splits.warnings if data.splits is not None else [])
    zero_shot = train.data.max_train_samples == 0
    if zero_shot:  # evaluate the initial model: no optimizer step, nothing to checkpoint
        logger.info("data.max_train_samples is 0: zero-shot run, evaluation only")
        train_section: dict[str, Any] = {"steps": 0, "planned_steps": 0, "resumed_from_step": None, "samples": 0}
    else:
        train_section = train_session(session)
    if preemption.requested():  # saved at a step boundary: the worker requeues, evaluation waits
        raise preemption.Preempted(f"stopped at step {session.trainer.state.global_step} for a requeue")
    run_dir.write_heartbeat("evaluating", step=session.trainer.state.global_step,
                            total_steps=session.trainer.state.max_steps)
    evaluation = task.evaluate(session.trainer, data, train, run_dir.path)
    reporter.log_final(session.trainer, evaluation.metrics)
    reporter.finish()
    latency = (None if train.latency is None else
               measure_latency(session.trainer, data.eval_features, train.latency, train.eval_batch_size,
                               task.non_model_columns))
    session.warnings.extend(write_adapter_analysis(model, train, run_dir))  # never raises
    stopping = None if zero_shot else early_stopping_outcome(train, session.trainer, run_dir)
    session.warnings.extend(early_stopping_warnings(stopping))
    if train.per_example_scores:  # a later run selects its data by these: before result.json too
        write_scores(session.trainer, task, data, run_dir)
    if spec.save_model:  # a later run starts from this one: before result.json says completed
        export_model(model, run_dir, session.trainer.state.global_step)
    return {
        "metrics": evaluation.metrics,
        "train": train_section,
        "eval": {"runtime_s": evaluation.runtime_s, "samples_per_s": evaluation.samples_per_s,
                 "postprocess_s": evaluation.postprocess_s, **loss_fields(evaluation),
                 "during_training_s": evaluation_time_s(run_dir)},
        "params": parameter_counts(model),
        "memory": session.memory,
        "energy": session.energy,
        "resume": _resume_section(session, run_dir),
        "warnings": session.warnings,
        "methods": method_names(train),
        "data": {"train_features": len(data.train_features), "eval_features": len(data.eval_features),
                 "eval_examples": len(data.eval_examples), "feature_cache_hits": data.cache_hits,
                 **_data_summary(data)},
        "profile": _profile_files(session, run_dir),
        "finished_training_at": time.time(),
        "zero_shot": zero_shot,
        "latency_ms": latency,
        "early_stopping": stopping,
        "initial_model": initial_model(spec),
    }


def write_data_files(train: TrainConfig, run_dir: RunDir, data: PreparedData) -> None:
    """The training subset's rows (train_subset.json) and the noise sample (noise_sample.json)."""
    splits = data.splits
    if splits is None:
        return
    if splits.subset is not None:
        subset = splits.subset
        write_json_atomic(run_dir.subset_path, {
            **subset.summary(), "strata": subset.strata, "indices": subset.indices, "ids": splits.subset_ids})
    if train.data.noise is not None:
        write_json_atomic(run_dir.noise_sample_path, {
            "noise": train.data.noise.model_dump(mode="json"),
            "seed": noise_seed(train.data.noise, train.seed),
            "splits": {split: {key: value for key, value in report.items() if key != "sample"}
                       for split, report in splits.noise.items()},
            "sample": [pair for report in splits.noise.values() for pair in report["sample"]],
        })


def _data_summary(data: PreparedData) -> dict[str, Any]:
    """result.json's data.train_examples, data.train_subset and data.noise."""
    splits = data.splits
    if splits is None:
        return {}
    subset = splits.subset
    return {
        "train_examples": len(splits.train),
        "train_subset": None if subset is None else subset.summary(),
        "noise": {split: {"examples": report["examples"], "changed": report["changed"]}
                  for split, report in splits.noise.items()} or None,
    }


def _resume_section(session: Session, run_dir: RunDir) -> dict[str, Any]:
    """attempts: the worker starts attempts.jsonl records (at least this one); requeues: the
    starts under a job id an earlier start had (SLURM keeps a requeued job's id; a resubmission
    gets a new one); rejected_checkpoints: those not trusted when this attempt resumed."""
    starts = [line for line in read_jsonl(run_dir.attempts_path) if line.get("event") == "start"]
    job_ids = [line.get("job_id") for line in starts]
    return {
        "attempts": max(len(starts), 1),
        "requeues": sum(1 for index, job in enumerate(job_ids) if job is not None and job in job_ids[:index]),
        "resumed_from_step": (_checkpoint_step(session.resume_point.checkpoint)
                              if session.resume_point.checkpoint is not None else None),
        "rejected_checkpoints": [rejected.as_record() for rejected in session.resume_point.rejected],
    }


def _profile_files(session: Session, run_dir: RunDir) -> dict[str, str]:
    if session.kernel_profiler is None or not session.kernel_profiler.saved:
        return {}
    return {"kernels": str(run_dir.kernels_path), "trace": str(run_dir.trace_path)}
