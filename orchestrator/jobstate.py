"""What the scheduler says about the latest attempt of each run, in one query.

SLURM: one ``sacct`` call for every array of the experiment, and one ``squeue`` call only for
the jobs accounting does not list or lists as preempted (SLURM's own manual warns that
sacct/squeue in loops load the controller). Local executor: the recorded process ids.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from orchestrator import slurm
from orchestrator.store import latest_attempt

ACCOUNTING_LAG_S = 120.0
ACTIVE = frozenset({"pending", "running", "requeued", "completing", "configuring", "suspended", "resizing", "queued"})


@dataclass(frozen=True)
class SchedState:
    state: str  # canonical lower-case SLURM state, or queued/running/ended for local runs
    source: str  # sacct | squeue | local | none
    node: str = ""
    elapsed_s: float | None = None
    reason: str = ""
    exit_code: str = ""
    raw: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def pid_alive(pid: int | None) -> bool:
    """True if ``pid`` is a live, non-zombie process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _array_id(job_id: str) -> str:
    return job_id.split("_", 1)[0]


def scheduler_states(manifest: dict[str, Any], run_ids: list[str]) -> tuple[dict[str, SchedState], str | None]:
    """State of each run's latest attempt; the note says when SLURM could not be asked fully.

    A SLURM job that neither accounting nor the controller could be asked about is ``unknown``,
    never absent: absent means SLURM has forgotten the job (status says ``lost``, and
    ``submit --retry-failed`` may submit the run again).
    """
    attempts = {run_id: latest_attempt(manifest, run_id) for run_id in run_ids}
    states: dict[str, SchedState] = {}
    slurm_jobs: dict[str, str] = {}
    for run_id, attempt in attempts.items():
        if attempt is None:
            continue
        if attempt.get("executor") == "local":
            states[run_id] = _local_state(manifest, attempt)
        elif attempt.get("job_id"):
            slurm_jobs[run_id] = str(attempt["job_id"])
    note = None
    if slurm_jobs:
        found, note, controller_answered = _query_slurm(sorted({_array_id(j) for j in slurm_jobs.values()}),
                                                        list(slurm_jobs.values()))
        for run_id, job_id in slurm_jobs.items():
            info = found.get(job_id)
            if info is not None:
                states[run_id] = info
            elif not controller_answered:
                states[run_id] = SchedState(state="unknown", source="none",
                                            reason="neither sacct nor squeue knows the job: SLURM could not be asked")
            elif time.time() - float((attempts[run_id] or {}).get("submitted_at", 0)) < ACCOUNTING_LAG_S:
                # squeue lists a new job a moment after sbatch: not yet known is not lost
                states[run_id] = SchedState(state="pending", source="none", reason="submitted, not yet listed")
    return states, note


def _query_slurm(array_ids: list[str], job_ids: list[str]) -> tuple[dict[str, SchedState], str | None, bool]:
    """sacct for every job in one call; then squeue, in one call, for the jobs accounting does not
    list (its records lag behind the controller, or slurmdbd is down) or lists as PREEMPTED.
    Returns the states, a note when a source failed, and whether the controller answered."""
    raw: dict[str, tuple[slurm.JobState, str]] = {}
    note = None
    try:
        raw = {job_id: (info, "sacct") for job_id, info in slurm.sacct_states(array_ids).items()}
    except (slurm.SlurmError, OSError) as exc:
        note = f"sacct unavailable ({_short(exc)}); states from squeue and the run directories"
    doubtful = [j for j in job_ids if j not in raw or raw[j][0].state in REQUEUED_BY_SLURM]
    controller_answered = True
    if doubtful:
        try:
            queued = slurm.squeue_states(doubtful)
        except (slurm.SlurmError, OSError) as exc:
            queued, controller_answered = {}, False
            note = (f"sacct and squeue unavailable ({_short(exc)}); states from the run directories only"
                    if note else f"squeue unavailable ({_short(exc)}); states from sacct and the run directories")
        for job_id, info in queued.items():
            # SLURM requeues a preempted (or node-failed) job itself, but accounting shows PREEMPTED until
            # the new record arrives: the controller says whether it is queued again.
            if job_id not in raw or info.state in ACTIVE:
                raw[job_id] = (info, "squeue")
    return {
        job_id: SchedState(state=info.state, source=source, node=info.node or "", elapsed_s=info.elapsed_s,
                           reason=info.reason or "", exit_code="" if info.exit_code is None else str(info.exit_code),
                           raw=info.raw_state)
        for job_id, (info, source) in raw.items()
    }, note, controller_answered


REQUEUED_BY_SLURM = frozenset({"preempted", "node_fail"})


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:160] if text else type(exc).__name__


def _local_state(manifest: dict[str, Any], attempt: dict[str, Any]) -> SchedState:
    pid = attempt.get("pid")
    if pid:
        if pid_alive(int(pid)):
            return SchedState(state="running", source="local")
        return SchedState(state="cancelled" if attempt.get("state") == "cancelled" else "ended", source="local")
    submission = manifest.get("submissions", {}).get(attempt.get("submission", ""), {})
    if attempt.get("state") == "cancelled":
        return SchedState(state="cancelled", source="local")
    if pid_alive(submission.get("runner_pid")):
        return SchedState(state="queued", source="local")
    return SchedState(state="ended", source="local", reason="local queue runner stopped before starting it")
