"""The run directory: every file a run writes, and the ``RunDir`` that reads and writes them.

Run-directory files (all JSON, each replaced atomically; ``metrics.jsonl`` is
append-only, one object a line):

``spec.json``       RunSpec, written at submit time.
``heartbeat.json``  {state, step, total_steps, epoch, last_loss, updated_at, pid,
                    hostname, job_id, attempt}; state in HEARTBEAT_STATES.
``metrics.jsonl``   {step, epoch, loss, learning_rate, grad_norm, time}, one a logging step,
                    plus {"eval": {...}} lines for evaluations.
``env.json``        git commit/dirty, python and package versions, GPU, CUDA, driver,
                    hostname, SLURM ids. No secrets (see ``redact_env``).
``result.json``     written last; see RESULT_KEYS. Its presence means the run finished.
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
``checkpoints/``    Trainer checkpoints for resume; each sealed by ``complete.json`` (size and
                    SHA-256 of every file) and carrying ``accounting.json`` (the run's figures
                    of the steps so far). See jobs/resume.py and jobs/accounting.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.contract.atomic import read_json, write_json_atomic
from jobs.contract.spec import RunSpec

SPEC_FILE = "spec.json"
HEARTBEAT_FILE = "heartbeat.json"
METRICS_FILE = "metrics.jsonl"
ENV_FILE = "env.json"
RESULT_FILE = "result.json"
FAILURE_FILE = "failure.json"
CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "worker.log"
ATTEMPTS_FILE = "attempts.jsonl"
SUBSET_FILE = "train_subset.json"
NOISE_SAMPLE_FILE = "noise_sample.json"
NOISE_SAMPLE_SIZE = 20

HEARTBEAT_STATES = ("starting", "loading", "training", "evaluating", "checkpointing", "waiting", "done", "failed")

# Keys of a heartbeat that identify the attempt writing it: kept when the heartbeat is rewritten.
HEARTBEAT_IDENTITY_KEYS = ("job_id", "attempt", "pid", "hostname")
FAILURE_REASONS = ("cuda_oom", "no_gpu", "nan_loss", "timeout", "preempted", "node_failure", "cancelled", "exception")


class RunDir:
    """The files of one run directory. Only that run's worker writes them (spec.json:
    the submitter)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    spec_path = property(lambda self: self.path / SPEC_FILE)
    heartbeat_path = property(lambda self: self.path / HEARTBEAT_FILE)
    metrics_path = property(lambda self: self.path / METRICS_FILE)
    env_path = property(lambda self: self.path / ENV_FILE)
    result_path = property(lambda self: self.path / RESULT_FILE)
    failure_path = property(lambda self: self.path / FAILURE_FILE)
    checkpoint_dir = property(lambda self: self.path / CHECKPOINT_DIR)
    log_path = property(lambda self: self.path / LOG_FILE)
    attempts_path = property(lambda self: self.path / ATTEMPTS_FILE)
    subset_path = property(lambda self: self.path / SUBSET_FILE)
    noise_sample_path = property(lambda self: self.path / NOISE_SAMPLE_FILE)

    def read_spec(self) -> RunSpec:
        return RunSpec.model_validate(read_json(self.spec_path))

    def write_spec(self, spec: RunSpec) -> None:
        write_json_atomic(self.spec_path, spec.model_dump(mode="json"))

    def write_heartbeat(self, state: str, **fields: Any) -> None:
        """Replace heartbeat.json; the attempt's identity (job id, attempt, pid, host) is carried over
        from the current heartbeat unless ``fields`` give it anew."""
        if state not in HEARTBEAT_STATES:
            raise ValueError(f"unknown heartbeat state {state!r}")
        previous = self.read_optional(self.heartbeat_path) or {}
        carried = {key: previous[key] for key in HEARTBEAT_IDENTITY_KEYS if key in previous}
        write_json_atomic(self.heartbeat_path, {**carried, "state": state, "updated_at": time.time(), **fields})

    def read_optional(self, path: Path) -> dict[str, Any] | None:
        """A JSON file, or None when absent or unreadable (torn, corrupt)."""
        try:
            value = read_json(path)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
            return None
        return value if isinstance(value, dict) else None

    def write_result(self, result: Mapping[str, Any]) -> None:
        write_json_atomic(self.result_path, dict(result))

    def write_failure(self, reason: str, message: str, **fields: Any) -> None:
        if reason not in FAILURE_REASONS:
            raise ValueError(f"unknown failure reason {reason!r}")
        write_json_atomic(
            self.failure_path, {"reason": reason, "message": message, "failed_at": time.time(), **fields}
        )


# result.json keys (nested). collect flattens these with "." into columns.
RESULT_KEYS = {
    "run_id": "str",
    "config_hash": "str",
    "metrics": "task metrics: exact, f1, HasAns_*, NoAns_*, best_* (squad_v2) or accuracy (sst2)",
    "train": "runtime_s, samples_per_s, steps_per_s, tokens_per_s, loss, samples, real_tokens, steps, planned_steps, "
             "resumed_from_step, compile_time_s, steady_step_time_s, steady_samples_per_s, steady_tokens_per_s, "
             "attempts_timed: the run's across all attempts (null when unmeasured, named in warnings)",
    "eval": "runtime_s, samples_per_s, postprocess_s; classification: num_classes, predicted_classes "
            "{class id: count}",
    "params": "trainable, total",
    "memory": "peak_allocated_mib, peak_reserved_mib, step_peak_allocated_mib, step_peak_reserved_mib (maxima over "
              "attempts), device_total_mib, device_name",
    "energy": "energy_j (summed over attempts), avg_power_w (NVML, when available)",
    "resume": "attempts, requeues, resumed_from_step, rejected_checkpoints [{checkpoint, reason}]",
    "warnings": "list of strings; non-empty means the run is not healthy",
    "healthy": "bool",
    "finished_at": "unix time",
    "job_id": "SLURM or local job id",
    "node": "hostname",
    "git_commit": "str or null",
    "run_name": "str",
    "wall_time_s": "the worker's wall time for this attempt",
    "methods": "list of the methods applied (lora, qlora, bitfit, freeze)",
    "data": "train_features, eval_features, eval_examples, feature_cache_hits, train_examples, train_subset "
            "{requested, selected, seed, strategy} or null, noise {split: {examples, changed}} or null",
    "profile": "paths of kernels.csv and trace.json when profile: true",
    "finished_training_at": "unix time training ended (before evaluation)",
    "adapted": "null, or {from, to, reason, adaptations} when the run trained with a micro-batching adapted after "
               "a CUDA OOM (spec.json adaptation; same effective batch)",
    "zero_shot": "bool: data.max_train_samples 0, no training (train.steps 0), the initial model evaluated",
}
