"""The run directory: every file a run writes, and the ``RunDir`` that reads and writes them.

Run-directory files (all JSON, each replaced atomically; ``metrics.jsonl`` is
append-only, one object a line):

``spec.json``       RunSpec, written at submit time.
``heartbeat.json``  {state, step, total_steps, epoch, last_loss, updated_at, pid,
                    hostname, job_id, attempt}; state in HEARTBEAT_STATES.
``metrics.jsonl``   {step, epoch, loss, learning_rate, grad_norm, time}, one a logging step,
                    plus with eval_strategy an EvalRecord {step, epoch, split (train |
                    validation), metrics, time, runtime_s} an evaluation during training;
                    a resumed run first drops the evaluations after its checkpoint's step.
``env.json``        git commit/dirty, python and package versions, GPU, CUDA, driver,
                    hostname, SLURM ids. No secrets (see ``redact_env``).
``result.json``     written last; see ``Result`` (RESULT_KEYS). Its presence means the run finished.
``failure.json``    {reason (FAILURE_REASONS), message, hint, traceback_tail, failed_at,
                    job_id, attempt, during (the heartbeat state the failure came in:
                    training, evaluating, ...)}.
``attempts.jsonl``  audit trail, one object a line: {event: start | finish | terminated,
                    time, job_id, attempt, ...} (a start carries ``adapted``, the spec's
                    OomAdaptation, when the run trains adapted after a CUDA OOM), and {event: checkpoint_rejected, checkpoint,
                    reason} for each checkpoint resume did not trust.
``train_subset.json`` the training rows a ``data.max_train_samples`` subset kept: {requested, selected,
                    seed, strategy, strata, indices, ids} (jobs/subset.py).
``noise_sample.json`` with ``data.noise``: the noise config, per split the examples and how many
                    changed, and up to NOISE_SAMPLE_SIZE pairs {split, index, original, corrupted}
                    (jobs/noise.py).
``failure.previous.json`` the failure of the attempt before this one (a new attempt starts clean).
``worker.log``      the worker's log.
``predictions.json``, ``nbest_predictions.json``, ``null_odds.json``: SQuAD v2's answers, n-best lists
                    and no-answer probabilities (the scorer's ``--na-prob-file``).
``kernels.csv``, ``trace.json``: with ``profile: true``, the top kernels and the Chrome trace.
``tensorboard/``    with ``report_to: [tensorboard]``: TensorBoard event files (train/loss, train/learning_rate,
                    train/grad_norm at each logging step, eval/<metric> at the step evaluated); point
                    ``tensorboard --logdir`` at the experiment directory to see its runs side by side.
``wandb/``          with ``report_to: [wandb]``: wandb's folder, ``offline-run-<time>-<id>/`` per attempt
                    unless WANDB_MODE says otherwise (upload later with ``wandb sync``).
``checkpoints/``    Trainer checkpoints for resume; each sealed by ``complete.json`` (size and
                    SHA-256 of every file) and carrying ``accounting.json`` (the run's figures
                    of the steps so far). See jobs/resume.py and jobs/accounting.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.contract import files
from jobs.contract.atomic import read_json, write_json_atomic, write_model_json_atomic
from jobs.contract.measures import LatencyMs
from jobs.contract.spec import RunSpec


class RunFile(BaseModel):
    """A JSON object the worker writes into the run directory. Open (``extra="allow"``): an older or
    newer worker's keys are kept, so every run directory ever written still reads."""

    model_config = ConfigDict(extra="allow")


class Heartbeat(RunFile):
    """heartbeat.json: what the worker is doing now; rewritten at most every few seconds."""

    state: files.HeartbeatState
    updated_at: float = Field(description="unix time of this heartbeat")
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    last_loss: float | None = None
    pid: int | None = None
    hostname: str | None = None
    job_id: str | None = None
    attempt: str | int | None = Field(None, description="SLURM_RESTART_COUNT of the attempt writing it")


class Failure(RunFile):
    """failure.json: why the run's latest attempt failed."""

    reason: files.FailureReason
    message: str = ""
    failed_at: float | None = Field(None, description="unix time")
    hint: str = ""
    traceback_tail: str = ""
    during: str | None = Field(None, description="the heartbeat state the failure came in: training, evaluating, ...")
    job_id: str | None = None
    attempt: str | int | None = None

    def text(self) -> str:
        """``reason: message (hint: ...)``, one line for status."""
        text = f"{self.reason or 'exception'}: {self.message or ''}".strip()
        return text + f" (hint: {self.hint})" if self.hint else text


EvalSplit = Literal["train", "validation"]


class EvalRecord(RunFile):
    """A metrics.jsonl line of an evaluation during training (``eval_strategy``); the other lines are the
    training loss a logging step ({step, epoch, time, loss, learning_rate, grad_norm}, no ``split``)."""

    step: int = Field(description="optimizer steps done when evaluated")
    epoch: float | None = None
    split: EvalSplit = Field(description="validation, or train: the seeded sample of train_eval_samples rows")
    metrics: dict[str, float | None] = Field(description="the task's metrics (percent), and loss where labels give one")
    time: float = Field(description="unix time")
    runtime_s: float | None = Field(None, description="wall time of this evaluation, post-processing included")


def eval_records(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluation lines of metrics.jsonl (those with a ``split``), in file order."""
    return [line for line in lines if "split" in line]


class EarlyStoppingOutcome(RunFile):
    """result.json's ``early_stopping`` (with ``early_stopping`` in the config): which step's weights
    were reported, and whether training stopped before its planned steps."""

    metric: str = Field(description="the validation metric watched")
    best_step: int | None = Field(description="the step of the best evaluation: its checkpoint was evaluated")
    best_value: float | None = None
    stopped_early: bool
    stopped_at_step: int
    patience: int
    min_delta: float
    unmeasured_steps: list[int] = Field(default_factory=list, description=(
        "evaluations whose metric could not be measured (null): counted as no improvement"))
    steps_after_last_evaluation: int | None = Field(None, description=(
        "steps trained after the last evaluation: never evaluated, so never the reported weights"))


_Section = dict[str, Any]


class Result(RunFile):
    """result.json, written last: its presence means the run completed. collect flattens its sections
    with "." into columns."""

    run_id: str | None = None
    config_hash: str | None = None
    metrics: _Section = Field(default_factory=dict, description=(
        "task metrics, the task's declared set (jobs.tasks): exact, f1, HasAns_*, NoAns_*, best_* (squad_v2), "
        "accuracy (sst2), matthews_correlation, f1, pearson, spearman, accuracy_mismatched (GLUE)"))
    train: _Section = Field(default_factory=dict, description=(
        "runtime_s, samples_per_s, steps_per_s, tokens_per_s, loss, samples, real_tokens, steps, planned_steps, "
        "resumed_from_step, compile_time_s, steady_step_time_s, steady_samples_per_s, steady_tokens_per_s, "
        "attempts_timed: the run's across all attempts (null when unmeasured, named in warnings)"))
    eval: _Section = Field(default_factory=dict, description=(
        "runtime_s, samples_per_s, postprocess_s, during_training_s (the evaluations during training, which "
        "train.runtime_s includes; null without), loss (null where the features carry no labels: SQuAD v2); classification: num_classes, predicted_classes "
        "{class id: count}; unmeasured: {metric: why it is null or absent}"))
    params: _Section = Field(default_factory=dict, description="trainable, total")
    memory: _Section = Field(default_factory=dict, description=(
        "peak_allocated_mib, peak_reserved_mib, step_peak_allocated_mib, step_peak_reserved_mib (maxima over "
        "attempts), device_total_mib, device_name"))
    energy: _Section = Field(default_factory=dict, description=(
        "energy_j (summed over attempts), avg_power_w (NVML, when available)"))
    resume: _Section = Field(default_factory=dict, description=(
        "attempts, requeues, resumed_from_step, rejected_checkpoints [{checkpoint, reason}]"))
    warnings: list[str] = Field(default_factory=list, description="non-empty means the run is not healthy")
    healthy: bool | None = None
    finished_at: float | None = Field(None, description="unix time")
    job_id: str | None = Field(None, description="SLURM or local job id")
    node: str | None = Field(None, description="hostname")
    git_commit: str | None = None
    run_name: str | None = None
    wall_time_s: float | None = Field(None, description="the worker's wall time for this attempt")
    methods: list[str] = Field(default_factory=list, description=(
        "the methods applied (lora, qlora, ia3, bitfit, freeze)"))
    data: _Section | None = Field(None, description=(
        "train_features, eval_features, eval_examples, feature_cache_hits, train_examples, train_subset "
        "{requested, selected, seed, strategy} or null, noise {split: {examples, changed}} or null"))
    profile: _Section | None = Field(None, description=f"paths of {files.KERNELS_FILE} and {files.TRACE_FILE} when profile: true")
    finished_training_at: float | None = Field(None, description="unix time training ended (before evaluation)")
    adapted: _Section | None = Field(None, description=(
        "null, or {from, to, reason, adaptations} when the run trained with a micro-batching adapted after "
        "a CUDA OOM (spec.json adaptation; same effective batch)"))
    latency_ms: LatencyMs | None = Field(None, description=(
        "with latency: {batch_1: {p50, p95}, batch_N: {p50, p95}, batch_size, device, batches, warmup, "
        "unmeasured {figure: why}}; ms a forward pass after warm-up; null when latency is off"))
    early_stopping: EarlyStoppingOutcome | None = Field(None, description=(
        "metric, best_step, best_value, stopped_early, stopped_at_step, patience, min_delta, unmeasured_steps, "
        "steps_after_last_evaluation (early_stopping set)"))
    zero_shot: bool | None = Field(None, description=(
        "data.max_train_samples 0, no training (train.steps 0), the initial model evaluated"))
    initial_model: _Section | None = Field(None, description=(
        "the model the run started from (and, zero-shot, evaluated): {source_run_id, source_run_name, take} "
        "for init_from, else {model_name_or_path} (the pretrained base, or random_init)"))


# result.json keys with what each holds (from ``Result``): collect's known keys.
RESULT_KEYS: dict[str, str] = {name: field.description or str(field.annotation)
                               for name, field in Result.model_fields.items()}

_File = TypeVar("_File", bound=RunFile)


def read_optional(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when absent or unreadable (torn, corrupt, not an object)."""
    try:
        value = read_json(path)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        return None
    return value if isinstance(value, dict) else None


def parse_run_file(model: type[_File], raw: Mapping[str, Any]) -> _File:
    """``raw`` as ``model``; a file that does not match (an older worker's, a hand edit) is returned as
    written, unvalidated, rather than lost: a run that completed must never read as not completed. A
    required field it lacks reads as None."""
    try:
        return model.model_validate(raw)
    except ValidationError:
        missing = {name: None for name, field in model.model_fields.items() if field.is_required()}
        return cast(_File, model.model_construct(**{**missing, **raw}))


class RunDir:
    """The files of one run directory. Only that run's worker writes them (spec.json:
    the submitter)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    spec_path = property(lambda self: self.path / files.SPEC_FILE)
    heartbeat_path = property(lambda self: self.path / files.HEARTBEAT_FILE)
    metrics_path = property(lambda self: self.path / files.METRICS_FILE)
    env_path = property(lambda self: self.path / files.ENV_FILE)
    result_path = property(lambda self: self.path / files.RESULT_FILE)
    failure_path = property(lambda self: self.path / files.FAILURE_FILE)
    previous_failure_path = property(lambda self: self.path / files.PREVIOUS_FAILURE_FILE)
    checkpoint_dir = property(lambda self: self.path / files.CHECKPOINT_DIR)
    log_path = property(lambda self: self.path / files.LOG_FILE)
    attempts_path = property(lambda self: self.path / files.ATTEMPTS_FILE)
    subset_path = property(lambda self: self.path / files.SUBSET_FILE)
    noise_sample_path = property(lambda self: self.path / files.NOISE_SAMPLE_FILE)
    per_example_scores_path = property(lambda self: self.path / files.PER_EXAMPLE_SCORES_FILE)
    selection_path = property(lambda self: self.path / files.SELECTION_FILE)
    kernels_path = property(lambda self: self.path / files.KERNELS_FILE)
    trace_path = property(lambda self: self.path / files.TRACE_FILE)
    tensorboard_dir = property(lambda self: self.path / files.TENSORBOARD_DIR)

    def read_spec(self) -> RunSpec:
        return RunSpec.model_validate(read_json(self.spec_path))

    def write_spec(self, spec: RunSpec, durable: bool = True) -> None:
        """``durable=False``: not fsynced; the caller syncs the filesystem before any job may read it."""
        write_model_json_atomic(self.spec_path, spec.model_dump(mode="json"), durable)

    def read_optional(self, path: Path) -> dict[str, Any] | None:
        """A JSON object file, or None when absent or unreadable (torn, corrupt)."""
        return read_optional(path)

    def read_heartbeat(self) -> Heartbeat | None:
        raw = read_optional(self.heartbeat_path)
        return None if raw is None else parse_run_file(Heartbeat, raw)

    def read_failure(self) -> Failure | None:
        raw = read_optional(self.failure_path)
        return None if raw is None else parse_run_file(Failure, raw)

    def read_result(self) -> Result | None:
        raw = read_optional(self.result_path)
        return None if raw is None else parse_run_file(Result, raw)

    def write_heartbeat(self, state: str, **fields: Any) -> None:
        """Replace heartbeat.json; the attempt's identity (job id, attempt, pid, host) is carried over
        from the current heartbeat unless ``fields`` give it anew. Raises ValueError for a state not in
        files.HEARTBEAT_STATES or a field of the wrong type."""
        if state not in files.HEARTBEAT_STATES:
            raise ValueError(f"unknown heartbeat state {state!r}")
        previous = read_optional(self.heartbeat_path) or {}
        carried = {key: previous[key] for key in files.HEARTBEAT_IDENTITY_KEYS if key in previous}
        self._write(self.heartbeat_path, Heartbeat, {**carried, "state": state, "updated_at": time.time(), **fields})

    def write_result(self, result: Mapping[str, Any]) -> None:
        """Write result.json (last: it says the run completed). Raises ValueError for a known key of
        the wrong type."""
        self._write(self.result_path, Result, dict(result))

    def write_failure(self, reason: str, message: str, **fields: Any) -> None:
        """Write failure.json. Raises ValueError for a reason not in files.FAILURE_REASONS."""
        if reason not in files.FAILURE_REASONS:
            raise ValueError(f"unknown failure reason {reason!r}")
        self._write(self.failure_path, Failure, {"reason": reason, "message": message, "failed_at": time.time(),
                                                 **fields})

    @staticmethod
    def _write(path: Path, model: type[RunFile], raw: dict[str, Any]) -> None:
        # Validated, then written as given: the model checks the types, and a non-finite loss stays
        # NaN/Infinity in the file (a JSON dump of the model would turn it into null).
        model.model_validate(raw)
        write_json_atomic(path, raw)
