"""The run directory's vocabulary, without pydantic: every file name, the heartbeat states, the failure
reasons and the ``RunOutcome`` of a run (so a login-node command that only lists run directories, such
as a collect with nothing new, need not load the models). ``jobs.contract`` exports all of it;
``jobs.contract.rundir`` describes what each file holds.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

# Every file (and folder) a run directory holds; nothing else names them.
SPEC_FILE = "spec.json"
HEARTBEAT_FILE = "heartbeat.json"
METRICS_FILE = "metrics.jsonl"
ENV_FILE = "env.json"
RESULT_FILE = "result.json"
FAILURE_FILE = "failure.json"
PREVIOUS_FAILURE_FILE = "failure.previous.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_MARKER_FILE = "complete.json"  # in each checkpoint folder: its seal (jobs/resume.py)
ACCOUNTING_FILE = "accounting.json"  # in each checkpoint folder: the figures so far (jobs/accounting.py)
LOG_FILE = "worker.log"
ATTEMPTS_FILE = "attempts.jsonl"
SUBSET_FILE = "train_subset.json"
NOISE_SAMPLE_FILE = "noise_sample.json"
# per_example_scores: true: every training row's loss under the final model (jobs/scores.py), before result.json
PER_EXAMPLE_SCORES_FILE = "per_example_scores.json"
SELECTION_FILE = "selection.json"  # data.select_from: the teacher, the ranks and bands of the rows chosen
ADAPTER_ANALYSIS_FILE = "adapter_analysis.json"  # LoRA runs: spectra and ranks of each update (jobs/adapter_analysis.py)
SPACE_RESERVE_FILE = "space_reserve.bin"  # jobs.failures.SpaceReserve: room to record a disk-full failure
PREDICTIONS_FILE = "predictions.json"
NBEST_PREDICTIONS_FILE = "nbest_predictions.json"
NULL_ODDS_FILE = "null_odds.json"
KERNELS_FILE = "kernels.csv"
TRACE_FILE = "trace.json"
TENSORBOARD_DIR = "tensorboard"  # report_to: [tensorboard]: the event files (jobs/reporting.py)
WANDB_DIR = "wandb"  # report_to: [wandb]: wandb's own folder (offline-run-*/ a run, for `wandb sync`)
NOISE_SAMPLE_SIZE = 20

HeartbeatState = Literal["starting", "loading", "training", "evaluating", "checkpointing", "waiting", "done", "failed"]
HEARTBEAT_STATES: tuple[str, ...] = HeartbeatState.__args__  # type: ignore[attr-defined]
# Keys of a heartbeat that identify the attempt writing it: kept when the heartbeat is rewritten.
HEARTBEAT_IDENTITY_KEYS = ("job_id", "attempt", "pid", "hostname")
FailureReason = Literal["cuda_oom", "no_gpu", "disk_full", "nan_loss", "timeout", "preempted", "node_failure",
                        "cancelled", "source_unusable", "exception"]
FAILURE_REASONS: tuple[str, ...] = FailureReason.__args__  # type: ignore[attr-defined]


class RunOutcome(str, Enum):
    """Where a run stands: the one vocabulary of ``status`` and ``collect``.

    A run with a result.json is ``completed`` (the word a SLURM user knows; never SLURM's COMPLETED
    alone: a job can exit 0 without a result). From the run directory alone (collect) a run is
    completed, failed, corrupt (a result.json that cannot be read), running or pending; status also
    asks the scheduler and can say timeout, preempted, cancelled, node_fail, out_of_memory, stalled,
    requeued, lost, unknown or not submitted."""

    COMPLETED = "completed"
    FAILED = "failed"
    CORRUPT = "corrupt"
    RUNNING = "running"
    PENDING = "pending"
    REQUEUED = "requeued"
    STALLED = "stalled"
    TIMEOUT = "timeout"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"
    NODE_FAIL = "node_fail"
    OUT_OF_MEMORY = "out_of_memory"
    LOST = "lost"
    UNKNOWN = "unknown"
    NOT_SUBMITTED = "not submitted"

    def __str__(self) -> str:
        return self.value


# Failure reasons that are outcomes of their own (the run can resume); any other reason is "failed".
_OUTCOME_REASONS = frozenset({"timeout", "preempted", "cancelled"})


def failure_outcome(reason: object) -> RunOutcome:
    """The outcome of a run whose failure.json gives ``reason``: timeout, preempted, cancelled, else failed."""
    return RunOutcome(reason) if reason in _OUTCOME_REASONS else RunOutcome.FAILED


def file_outcome(has_result: bool, result_corrupt: bool, has_failure: bool, heartbeat_state: object) -> RunOutcome:
    """A run's outcome from its run directory alone (no scheduler): a result wins, then a corrupt
    result, a failure (or a heartbeat that says failed), a heartbeat (running), else pending."""
    if has_result:
        return RunOutcome.COMPLETED
    if result_corrupt:
        return RunOutcome.CORRUPT
    if has_failure or heartbeat_state == "failed":
        return RunOutcome.FAILED
    return RunOutcome.RUNNING if heartbeat_state is not None else RunOutcome.PENDING
