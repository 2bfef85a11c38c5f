"""What the scheduler says about the latest attempt of each run, in one query.

SLURM: one ``sacct`` call for every array of the experiment (``squeue`` as the fallback:
SLURM's own manual warns that sacct/squeue in loops load the controller). Local
executor: the recorded process ids.
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
    """State of each run's latest attempt; the note says when SLURM could not be asked fully."""
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
        found, note = _query_slurm(sorted({_array_id(j) for j in slurm_jobs.values()}), list(slurm_jobs.values()))
        for run_id, job_id in slurm_jobs.items():
            info = found.get(job_id)
            if info is not None:
                states[run_id] = info
            elif note is None and time.time() - float(attempts[run_id].get("submitted_at", 0)) < ACCOUNTING_LAG_S:
                # sacct lists a new job a few seconds after sbatch: not yet known is not lost
                states[run_id] = SchedState(state="pending", source="none", reason="submitted, not yet in accounting")
    return states, note


def _query_slurm(array_ids: list[str], job_ids: list[str]) -> tuple[dict[str, SchedState], str | None]:
    try:
        raw = slurm.sacct_states(array_ids)
        source, note = "sacct", None
    except (slurm.SlurmError, OSError) as exc:
        note = f"sacct unavailable ({_short(exc)}); states from squeue and the run directories"
        try:
            raw = slurm.squeue_states(job_ids)
            source = "squeue"
        except (slurm.SlurmError, OSError) as exc2:
            return {}, f"sacct and squeue unavailable ({_short(exc2)}); states from the run directories only"
    if source == "sacct":
        raw.update(_requeued_after(raw, job_ids))
    return {
        job_id: SchedState(state=info.state, source=source, node=info.node or "", elapsed_s=info.elapsed_s,
                           reason=info.reason or "", exit_code="" if info.exit_code is None else str(info.exit_code),
                           raw=info.raw_state)
        for job_id, info in raw.items()
    }, note


REQUEUED_BY_SLURM = frozenset({"preempted", "node_fail"})


def _requeued_after(raw: dict[str, slurm.JobState], job_ids: list[str]) -> dict[str, slurm.JobState]:
    """SLURM requeues a preempted (or node-failed) job itself, but accounting shows PREEMPTED until the
    new record arrives. For those few jobs only, the controller says whether they are queued again."""
    wanted = set(job_ids)
    doubtful = [job_id for job_id, info in raw.items() if info.state in REQUEUED_BY_SLURM and job_id in wanted]
    if not doubtful:
        return {}
    try:
        queued = slurm.squeue_states(doubtful)
    except (slurm.SlurmError, OSError):
        return {}
    return {job_id: info for job_id, info in queued.items() if info.state in ACTIVE and job_id in raw}


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
