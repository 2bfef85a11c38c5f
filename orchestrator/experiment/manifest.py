"""The experiment's manifest.json, typed: the ONE module that reads and writes it.

``manifest.json`` records every submission (one group of runs handed to a backend at once) and
every attempt (one submission of one run) with its job id, so that status, cancel, clean, collect
and the local queue agree on what was submitted. Shape (schema_version 1)::

    {"schema_version": 1, "experiment": "study", "baseline": "A1", "current_runs": {"A1": "A1-6f4c..."},
     "matrix_path": ..., "matrix_sha256": ..., "cluster": "local", "updated_at": 1796009621.8,
     "runs": {"A1-6f4c...": {"run_name": "A1", "attempts": [{Attempt}, ...]}},
     "submissions": {"20261130-033259-7228cc": {Submission}},
     "waiting": ["A9-..."], "feeder": {Feeder},     (only while a job cap holds runs back)
     "sources": {"matrix_sha256": ..., "of": {"S1-9a0b...": {"run_id": "T-6f4c...", "run_name": "T"}}}}

Times are Unix seconds. Keys this version does not know are kept (``extra="allow"``), and only the
keys that were set are written (``exclude_unset``), so a manifest written by an older or newer
orchestrate reads and writes back unchanged (tests/unit/data/manifests/ holds ones written before
these types existed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.contract import read_json, write_bytes_atomic, write_model_json_atomic
from orchestrator.errors import RuntimeUserError
from orchestrator.experiment import MANIFEST_FILE

if TYPE_CHECKING:
    from jobs.contract import RunSpec

SCHEMA_VERSION = 1

# Submission.state: "submitting" is written before the backend is called, so a crash in between is
# visible (and recovered) at the next submit.
SUBMITTING, SUBMITTED, FAILED, FINISHED = "submitting", "submitted", "failed", "finished"
# Attempt.state of a local-queue attempt (a SLURM attempt has none: SLURM knows its state).
QUEUED, STARTED, ENDED, CANCELLED = "queued", "started", "ended", "cancelled"


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=False)


class Attempt(_Record):
    """One submission of one run."""

    job_id: str | None = None  # "123_4" (SLURM array task), "124", "local-24039"; None until a local run starts
    submission: str | None = None  # the Submission's token
    submitted_at: float = 0.0
    executor: str = "slurm"  # the backend's registry name
    state: str | None = None  # local queue only: queued, started, ended, cancelled
    adapted: dict[str, Any] | None = None  # OomAdaptation (jobs.contract) as JSON, when resubmitted smaller
    pid: int | None = None  # local: the job's process id
    log: str | None = None  # local: the job's stderr file
    gpus: str | None = None  # local: the devices it got, comma-separated
    started_at: float | None = None
    ended_at: float | None = None


class RunRecord(_Record):
    run_name: str
    attempts: list[Attempt] = Field(default_factory=list)


class Submission(_Record):
    """One group of runs submitted at once (a SLURM job array, or one local queue)."""

    token: str
    group: str = ""  # the runs' resources.group_key()
    state: str = SUBMITTING  # submitting, submitted, failed, finished
    executor: str = "slurm"
    run_ids: list[str] = Field(default_factory=list)  # in array task order
    job_name: str = ""
    folder: str = ""  # submitit's folder of this submission
    started_at: float = 0.0
    submitted_at: float | None = None
    job_ids: list[str] = Field(default_factory=list)
    array_job_id: str | None = None
    error: str | None = None  # state failed: why
    recovered: bool | None = None  # found by job name after an interrupted submit
    pruned: bool | None = None  # its submitit folder was deleted
    # the local queue's own fields
    parallelism: int | None = None
    runs_per_gpu: int | None = None
    setup: list[str] | None = None
    runner_pid: int | None = None
    runner_state: str | None = None
    gpus_found: list[str] | None = None
    gpus_found_by: str | None = None


class Feeder(_Record):
    """The SLURM job that submits the runs waiting for a slot (a job cap, MaxSubmitJobs) once the
    runs it depends on have ended: orchestrator/feed.py. ``state`` is submitting before sbatch."""

    job_id: str | None = None
    job_name: str = ""
    state: str = SUBMITTING  # submitting, submitted, failed
    after: list[str] = Field(default_factory=list)  # the job (array) ids it waits for; [] = a timed retry
    cap: str = ""  # the cap it honours, e.g. "MaxSubmitJobs=25 (association root/capstudy)"
    executor: str = "slurm"  # the backend that runs the fed runs
    cwd: str = ""  # where submit ran: the matrix path in the manifest is relative to it
    submitted_at: float = 0.0
    error: str | None = None


class SourceOf(_Record):
    """The run a dependent starts from (its spec's ``source``: init_from, select_from)."""

    run_id: str
    run_name: str


class RunSources(_Record):
    """Which runs of the submitted matrix start from another run, recorded by submit so that status
    need not read every run's spec.json to find out (10,000 reads: seconds)."""

    matrix_sha256: str | None = None  # the matrix this describes: any other matrix_sha256 makes it stale
    of: dict[str, SourceOf] = Field(default_factory=dict)  # dependent run id -> its source; absent: no source


class Manifest(_Record):
    schema_version: int = SCHEMA_VERSION
    experiment: str = ""
    baseline: str | None = None
    current_runs: dict[str, str] = Field(default_factory=dict)  # run_name -> run_id of the matrix as last submitted
    runs: dict[str, RunRecord] = Field(default_factory=dict)  # run_id -> its attempts
    submissions: dict[str, Submission] = Field(default_factory=dict)  # token -> submission
    matrix_path: str | None = None
    matrix_sha256: str | None = None
    cluster: str | None = None
    waiting: list[str] = Field(default_factory=list)  # run ids not yet submitted: a job cap left no slot
    feeder: Feeder | None = None  # the job that submits ``waiting`` as slots free
    sources: RunSources | None = None  # absent in manifests written before it was recorded
    updated_at: float | None = None

    @classmethod
    def empty(cls, experiment: str) -> Manifest:
        return cls(schema_version=SCHEMA_VERSION, experiment=experiment, baseline=None, current_runs={}, runs={},
                   submissions={})

    def latest_attempt(self, run_id: str) -> Attempt | None:
        run = self.runs.get(run_id)
        return run.attempts[-1] if run is not None and run.attempts else None

    def run_name(self, run_id: str) -> str:
        """The recorded name, else what the id says (``<name>-<hash>``)."""
        run = self.runs.get(run_id)
        return run.run_name if run is not None else run_id.rsplit("-", 1)[0]

    def record_sources(self, specs: Iterable[RunSpec]) -> None:
        """Record the sources of the matrix's runs (``specs``: all of them; set matrix_sha256 first)."""
        self.sources = RunSources(matrix_sha256=self.matrix_sha256,
                                  of={s.run_id: SourceOf(run_id=s.source.run_id, run_name=s.source.run_name)
                                      for s in specs if s.source is not None})

    def recorded_sources(self) -> dict[str, SourceOf] | None:
        """Dependent run id -> its source, for the runs of ``current_runs`` (a run there and not in the
        mapping has none); None where no record describes the current matrix (an older manifest): then
        each run's spec.json says."""
        record = self.sources
        return record.of if record is not None and record.matrix_sha256 == self.matrix_sha256 else None

    def add_attempt(self, run_id: str, run_name: str, attempt: Attempt) -> None:
        self.runs.setdefault(run_id, RunRecord(run_name=run_name, attempts=[])).attempts.append(attempt)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


def read(path: Path, experiment: str) -> Manifest:
    """The manifest at ``path``; an empty one when absent. Raises RuntimeUserError when corrupt."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        return Manifest.empty(experiment)
    except json.JSONDecodeError as exc:
        raise RuntimeUserError(f"{path} is corrupt ({exc}); restore it from {path}.bak") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise RuntimeUserError(f"{path} does not read as a manifest ({problems}); restore it from {path}.bak") from None


def write(path: Path, manifest: Manifest) -> None:
    """Atomic replace, keeping the previous version as ``manifest.json.bak``. Encoded by orjson (a
    10,000-run manifest is about 3.6 MB and a submit writes it about once an array)."""
    manifest.updated_at = time.time()
    try:  # the backup is a copy: manifest.json itself must exist at every moment for readers
        write_bytes_atomic(Path(str(path) + ".bak"), path.read_bytes())
    except FileNotFoundError:
        pass
    write_model_json_atomic(path, manifest.to_json())


def read_optional(path: Path) -> tuple[Manifest | None, list[str]]:
    """For readers that treat the manifest as optional (collect): the manifest or None, and the
    problems that made it unreadable (never an exception)."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        return None, []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{MANIFEST_FILE}: unreadable ({_short(exc)})"]
    try:
        return Manifest.model_validate(data), []
    except ValidationError as exc:
        return None, [f"{MANIFEST_FILE}: not a manifest ({_short(exc)})"]


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
