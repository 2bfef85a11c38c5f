"""The local backend: a group of runs is one detached queue process (queue.py) that runs them through
submitit's LocalExecutor on this machine, each with the GPUs it asks for (gpus.py).

The queue records each started job's process id in its attempt, so states come from the process
table and cancel signals the processes; a run not started yet is cancelled in the manifest and the
queue never starts it.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.contract import write_bytes_atomic
from orchestrator import profiles
from orchestrator.backends.base import Group, Limits, SchedState, carries_secret
from orchestrator.backends.local import queue
from orchestrator.experiment.manifest import CANCELLED, QUEUED, Attempt, Manifest, Submission

if TYPE_CHECKING:  # annotations only: the matrix package validates executor names against the registry
    from orchestrator.matrix import Matrix

SETUP_FILE = "setup.sh"  # the local queue's setup lines, owner-only (they may carry a secret)
POLL_INTERVAL_S = 2.0  # submit --wait: asking the process table costs nothing


class LocalBackend:
    name: str = "local"
    initial_attempt_state: str | None = QUEUED

    def available(self) -> bool:
        return True

    def unavailable_reason(self) -> str:
        return "never"

    def wait_interval_s(self, asked_s: float) -> float:
        return POLL_INTERVAL_S

    def limits(self, matrix: Matrix, new_jobs: int, dry_run: bool = False) -> Limits:
        return Limits(matrix.profile.max_array_size or 10**9)

    def submit(self, group: Group) -> list[str | None]:
        return [None] * len(group.runs)  # a job id is known once the queue starts the run

    def launch(self, group: Group, submission: Submission, save: Callable[[], None]) -> None:
        """Record the queue's settings, then start it (it reads them from the manifest)."""
        profile = group.matrix.profile
        submission.parallelism = min(profile.local_parallelism, group.runs[0].resources.array_parallelism)
        submission.runs_per_gpu = profile.local_runs_per_gpu
        submission.setup = _private_setup(group.folder, _setup_lines(group), carries_secret(group.matrix))
        save()
        submission.runner_pid = queue.start(group.experiment.path, submission.token)

    def find_submitted(self, submission: Submission) -> dict[int, str]:
        return {}  # the queue is started after the attempts are recorded: an interrupted one never ran

    def states(self, manifest: Manifest, attempts: dict[str, Attempt]) -> tuple[dict[str, SchedState], str | None]:
        return {run_id: _state(manifest, attempt) for run_id, attempt in attempts.items()}, None

    def cancel(self, manifest: Manifest, attempts: dict[str, Attempt]) -> None:
        for attempt in attempts.values():
            if attempt.pid and queue.pid_alive(attempt.pid):
                # SIGINT is submitit's own cancel (LocalJob.cancel): the controller interrupts, then kills, its tasks
                os.kill(attempt.pid, signal.SIGINT)
            attempt.state = CANCELLED
            attempt.ended_at = time.time()

    def dry_run(self, group: Group) -> str:
        return "# local executor: these lines run before each job\n" + ("\n".join(_setup_lines(group)) or "# (none)")


def _setup_lines(group: Group) -> list[str]:
    preamble = profiles.render_preamble(group.matrix.profile, group.runs[0].resources,
                                        {"experiment": group.matrix.experiment})
    return profiles.split_preamble(preamble)[1]


def _private_setup(folder: Path, setup: list[str], secret: bool) -> list[str]:
    """The local queue's setup lines as one line that sources them from a file (owner-only when it
    carries a secret): the profile's env values stay out of the manifest and the job's command line."""
    if not setup:
        return []
    path = folder / SETUP_FILE
    write_bytes_atomic(path, ("\n".join(setup) + "\n").encode("utf-8"), mode=0o600 if secret else None)
    return [f". {shlex.quote(str(path))}"]


def _state(manifest: Manifest, attempt: Attempt) -> SchedState:
    if attempt.pid:
        if queue.pid_alive(attempt.pid):
            return SchedState(state="running", source="local", unit="process")
        return SchedState(state=CANCELLED if attempt.state == CANCELLED else "ended", source="local", unit="process")
    if attempt.state == CANCELLED:
        return SchedState(state=CANCELLED, source="local", unit="process")
    submission = manifest.submissions.get(attempt.submission or "")
    if submission is not None and queue.pid_alive(submission.runner_pid):
        return SchedState(state="queued", source="local", unit="process")
    return SchedState(state="ended", source="local", unit="process",
                      reason="local queue runner stopped before starting it")
