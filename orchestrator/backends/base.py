"""What every backend (a scheduler that runs the jobs: SLURM, the local queue, ...) provides.

A backend submits a group of runs with identical resources at once (one SLURM job array), answers
the states of many runs in one call, cancels, reports its limits, and renders what it would submit
(``submit --dry-run``). It never writes the manifest itself except through the Submission and
Attempt records it is handed: submit.py records a submission as ``submitting`` before calling
:meth:`Backend.submit`, so no job reaches a scheduler untracked. Backends are looked up by the
profile's ``executor`` name in registry.py; a new one is one module plus one registry line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from jobs.contract import RunSpec, is_secret_name
from orchestrator.experiment.manifest import Attempt, Manifest, Submission
from orchestrator.experiment.store import Experiment

if TYPE_CHECKING:  # annotations only: the matrix package validates executor names against the registry
    from orchestrator.matrix import Matrix

# Scheduler states of a run that may still start or is running: never submitted twice.
ACTIVE = frozenset({"pending", "running", "requeued", "completing", "configuring", "suspended", "resizing", "queued"})


@dataclass(frozen=True)
class SchedState:
    """What a backend says about one run's latest attempt."""

    state: str  # canonical lower-case SLURM state, or queued/running/ended/cancelled for a process
    source: str  # where it came from: sacct | squeue | local | none | a backend's own word
    node: str = ""
    elapsed_s: float | None = None
    reason: str = ""
    exit_code: str = ""
    raw: str = ""  # the scheduler's own text, e.g. "CANCELLED by 0"
    unit: str = "job"  # what ran: "job" (a scheduler job, with an exit code) or "process"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


@dataclass(frozen=True)
class Limits:
    """How large one submission may be, and sentences about limits that could not be checked or
    that this submission would pass (printed as ``warning:`` by submit, ``note:`` by the dry run)."""

    max_array_size: int
    notes: list[str] = field(default_factory=list)
    free_slots: int | None = None  # jobs that may still be queued under a job cap (MaxSubmitJobs); None: no cap
    cap: str = ""  # which cap, for messages ("MaxSubmitJobs=25 (association root/capstudy)")


@dataclass
class Group:
    """Runs with identical resources, submitted at once (``runs`` in array task order)."""

    experiment: Experiment
    matrix: Matrix
    runs: list[RunSpec]
    folder: Path  # submitit's folder of this submission
    job_name: str
    # init_from: the source's job (SLURM "123_4") every run of the group waits for; None: none to wait for.
    # A backend without scheduler dependencies (the local queue) waits on the source's run dir instead.
    after_job: str | None = None


class Backend(Protocol):
    """A scheduler. ``name`` is the profile's ``executor`` value it is registered under."""

    name: str
    # the state an attempt is recorded with at submit (the local queue's "queued"), None when the
    # scheduler is asked instead
    initial_attempt_state: str | None

    def available(self) -> bool:
        """Whether this machine can submit to it (``executor: auto`` takes the first available)."""
        ...

    def unavailable_reason(self) -> str:
        """Why :meth:`available` is False, for the error message."""
        ...

    def wait_interval_s(self, asked_s: float) -> float:
        """Seconds between polls of ``submit --wait`` when the user asked for ``asked_s``."""
        ...

    def limits(self, matrix: Matrix, new_jobs: int, dry_run: bool = False) -> Limits:
        """The largest array and the notes about limits, for ``new_jobs`` more jobs."""
        ...

    def submit(self, group: Group) -> list[str | None]:
        """Hand the group to the scheduler; one job id a run (None where it is known only later)."""
        ...

    def launch(self, group: Group, submission: Submission, save: Callable[[], None]) -> None:
        """After the attempts are recorded (and saved): start what runs them, if anything must."""
        ...

    def find_submitted(self, submission: Submission) -> dict[int, str]:
        """The jobs of an interrupted submission (left ``submitting``), by array task index; {} when
        the scheduler never got it. Raises OSError or the backend's error when it cannot be asked."""
        ...

    def states(self, manifest: Manifest, attempts: dict[str, Attempt]) -> tuple[dict[str, SchedState], str | None]:
        """The state of each run's latest attempt (``attempts``: run_id -> attempt) in as few queries
        as possible, and a note when the scheduler could not be asked fully. A run left out is one the
        scheduler has forgotten (status: ``lost``); one it could not be asked about is ``unknown``."""
        ...

    def cancel(self, manifest: Manifest, attempts: dict[str, Attempt]) -> None:
        """Cancel these attempts (recording it in them where the scheduler does not remember).
        Raises RuntimeUserError, having cancelled nothing, when the scheduler cannot be reached."""
        ...

    def dry_run(self, group: Group) -> str:
        """The script (or setup lines) :meth:`submit` would use for ``group``, secrets not yet redacted."""
        ...


def carries_secret(matrix: Matrix) -> bool:
    """The job scripts carry a secret-named value (the profile's ``env: {WANDB_API_KEY: ...}``)."""
    return any(is_secret_name(name) for name in matrix.profile.env)


def job_name(experiment: str, token: str) -> str:
    """The scheduler's job name of a submission (found by it after an interrupted submit)."""
    return f"orc.{experiment}.{token}"


def short_error(exc: BaseException) -> str:
    """The last line of an error, at most 160 characters."""
    text = str(exc).strip().splitlines()
    return text[-1][:160] if text else type(exc).__name__
