"""The SLURM backend: a group of runs is one job array submitted through submitit's SlurmExecutor.

States: one ``sacct`` call for every array of the experiment, and one ``squeue`` call only for the
jobs accounting does not list or lists as preempted (SLURM's own manual warns that sacct/squeue in
loops load the controller). Cancel: one ``scancel`` call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from orchestrator.backends.base import Group, Limits, SchedState, carries_secret, short_error
from orchestrator.backends.slurm import commands
from orchestrator.backends.slurm.parse import DEFAULT_MAX_ARRAY_SIZE, JobState, max_array_size
from orchestrator.backends.slurm.script import interpreter, render_script, sbatch_parameters
from orchestrator.errors import RuntimeUserError
from orchestrator.experiment.manifest import Attempt, Manifest, Submission

if TYPE_CHECKING:  # annotations only: the matrix package validates executor names against the registry
    from orchestrator.matrix import Matrix

ACCOUNTING_LAG_S = 120.0
MIN_POLL_INTERVAL_S = 30.0  # between status queries of --wait: sacct/squeue load the controller
REQUEUED_BY_SLURM = frozenset({"preempted", "node_fail"})
# Variables that configure SLURM's client commands on this machine, not a job: where the configuration
# is (SLURM_CONF), which cluster to talk to, how times print.
SITE_SLURM_VARIABLES = ("SLURM_CONF", "SLURM_CLUSTERS", "SLURM_TIME_FORMAT")


class SlurmBackend:
    name: str = "slurm"
    initial_attempt_state: str | None = None

    def available(self) -> bool:
        return commands.slurm_available()

    def unavailable_reason(self) -> str:
        return "sbatch is not on the PATH"

    def wait_interval_s(self, asked_s: float) -> float:
        return max(asked_s, MIN_POLL_INTERVAL_S)

    def limits(self, matrix: Matrix, new_jobs: int, dry_run: bool = False) -> Limits:
        """The job caps: MaxSubmitJobs and the controller's MaxJobCount (the runs beyond the stricter wait
        for a slot: orchestrator/feed.py); then MaxArraySize (array indices stay below it)."""
        caps: list[commands.SubmitCap | None] = []
        notes: list[str] = []
        ask = not (dry_run and not commands.slurm_available())
        if not ask:
            notes.append("MaxSubmitJobs not checked (nor MaxJobCount): SLURM's commands are not on the PATH here; "
                         "the real submit honours both")
        else:
            # every (account, QOS) the runs are charged to has its own cap: the one with fewest free slots rules
            charged = sorted({(s.resources.account or "", s.resources.qos or "") for s in matrix.runs})
            caps = [commands.submit_cap(getpass.getuser(), account or None, qos or None) for account, qos in charged]
        config: dict[str, str] = {}
        if ask or not matrix.profile.max_array_size:
            try:
                config = commands.read_config()
            except (commands.SlurmError, OSError) as exc:
                why = str(exc).splitlines()[0][:120]
                notes.append(f"MaxJobCount not checked ({why})" if matrix.profile.max_array_size else
                             f"MaxArraySize not checked ({why}): arrays split at SLURM's default, "
                             f"{DEFAULT_MAX_ARRAY_SIZE}; set max_array_size in the cluster profile if yours differs"
                             + (" (MaxJobCount not checked either)" if ask else ""))
        if ask and config:
            caps.append(commands.job_count_cap(config))
        cap = min((c for c in caps if c is not None), key=lambda c: c.free, default=None)
        free, where = (cap.free, cap.where) if cap is not None else (None, "")
        size = matrix.profile.max_array_size or (max_array_size(config) if config else DEFAULT_MAX_ARRAY_SIZE)
        return Limits(size, _cap_notes(cap, new_jobs) + notes, free, where)

    def submit(self, group: Group) -> list[str | None]:
        import submitit  # here, not at the top: status and cancel never need it (0.1-0.3 s of import)

        from jobs.entrypoint import Worker

        resources = group.runs[0].resources
        executor = submitit.SlurmExecutor(folder=group.folder, max_num_timeout=resources.max_requeues,
                                          python=interpreter())
        executor.update_parameters(**sbatch_parameters(group.matrix, resources, group.job_name, group.after_job))
        with outside_enclosing_job(), private_files(carries_secret(group.matrix)), executor.batch():
            jobs = [executor.submit(Worker(), str(group.experiment.run_dir(s.run_id).path)) for s in group.runs]
        commands.CALLS["sbatch"] += 1  # submitit ran sbatch once for the array
        return [str(job.job_id) for job in jobs]

    def launch(self, group: Group, submission: Submission, save: Callable[[], None]) -> None:
        """Nothing to start: SLURM runs the jobs."""

    def find_submitted(self, submission: Submission) -> dict[int, str]:
        return commands.jobs_by_name(submission.job_name)

    def states(self, manifest: Manifest, attempts: dict[str, Attempt]) -> tuple[dict[str, SchedState], str | None]:
        jobs = {run_id: str(a.job_id) for run_id, a in attempts.items() if a.job_id}
        if not jobs:
            return {}, None
        found, note, unreachable = _query(sorted({j.split("_", 1)[0] for j in jobs.values()}), list(jobs.values()))
        states: dict[str, SchedState] = {}
        for run_id, job_id in jobs.items():
            info = found.get(job_id)
            if info is not None:
                states[run_id] = info
            elif unreachable is not None:  # accounting lags behind sbatch: a new job may not be recorded yet
                states[run_id] = SchedState(state="unknown", source="none",
                                            reason=f"accounting does not list the job (yet) and slurmctld could not "
                                                   f"be asked ({unreachable})")
            elif time.time() - attempts[run_id].submitted_at < ACCOUNTING_LAG_S:
                # squeue lists a new job a moment after sbatch: not yet known is not lost
                states[run_id] = SchedState(state="pending", source="none", reason="submitted, not yet listed")
        return states, note

    def cancel(self, manifest: Manifest, attempts: dict[str, Attempt]) -> None:
        job_ids = [str(a.job_id) for a in attempts.values() if a.job_id]
        if not job_ids:
            return
        try:
            commands.scancel(job_ids)
        except (commands.SlurmError, OSError) as exc:
            raise RuntimeUserError(
                f"could not cancel {len(job_ids)} SLURM job(s) ({', '.join(job_ids[:5])}"
                f"{' ...' if len(job_ids) > 5 else ''}): {exc}; nothing was cancelled. Run "
                "`orchestrate cancel` again once slurmctld answers (`squeue` works)") from exc

    def dry_run(self, group: Group) -> str:
        return render_script(group.matrix, group.runs[0].resources, len(group.runs), group.folder, group.job_name,
                             group.after_job)


def _cap_notes(cap: commands.SubmitCap | None, new_jobs: int) -> list[str]:
    """Say when the job cap holds runs back (they are fed later, never refused by SLURM)."""
    if cap is None or new_jobs <= cap.free:
        return []
    return [(f"{new_jobs} new jobs, {cap.free} free under {cap.where}: the rest wait for a slot and a "
             "feeder job submits them as runs end (orchestrate status: waiting for a slot)")]


def _query(array_ids: list[str], job_ids: list[str]) -> tuple[dict[str, SchedState], str | None, str | None]:
    """sacct for every job in one call; then squeue, in one call, for the jobs accounting does not
    list (its records lag behind the controller, or slurmdbd is down) or lists as PREEMPTED.
    Where a job is queued or running, or squeue is needed, `scontrol ping` first (instant, where squeue
    takes 18 s to give up): with slurmctld down, accounting's pending/running is only its last record,
    so those jobs are `unknown`, never resubmitted, and the note says why.
    Returns the states, a note when a source failed, and why the controller could not be asked (None when it
    answered or was not needed)."""
    raw: dict[str, tuple[JobState, str]] = {}
    note = None
    try:
        raw = {job_id: (info, "sacct") for job_id, info in commands.sacct_states(array_ids).items()}
    except (commands.SlurmError, OSError) as exc:
        note = f"sacct unavailable ({short_error(exc)}); states from squeue and the run directories"
    doubtful = [j for j in job_ids if j not in raw or raw[j][0].state in REQUEUED_BY_SLURM]
    active = [j for j in job_ids if j in raw and SchedState(raw[j][0].state, "sacct").active]
    down = _controller_down() if doubtful or active else None
    if down:
        note = (f"slurmctld unreachable ({down}): {len(active) + len(doubtful)} queued or running job(s) "
                "shown as unknown (accounting's record may be stale) until it answers; "
                + (note or "states from sacct and the run directories"))
    elif doubtful:
        try:
            queued = commands.squeue_states(doubtful)
        except (commands.SlurmError, OSError) as exc:
            queued, down = {}, short_error(exc)
            note = (f"sacct and squeue unavailable ({down}); states from the run directories only"
                    if note else f"squeue unavailable ({down}); states from sacct and the run directories")
        for job_id, info in queued.items():
            # SLURM requeues a preempted (or node-failed) job itself, but accounting shows PREEMPTED until
            # the new record arrives: the controller says whether it is queued again.
            if job_id not in raw or SchedState(info.state, "squeue").active:
                raw[job_id] = (info, "squeue")
    states = {
        job_id: SchedState(state=info.state, source=source, node=info.node or "", elapsed_s=info.elapsed_s,
                           reason=info.reason or "", exit_code="" if info.exit_code is None else str(info.exit_code),
                           raw=info.raw_state)
        for job_id, (info, source) in raw.items()
    }
    for job_id in active if down else []:
        last = states[job_id]
        states[job_id] = SchedState(state="unknown", source="sacct", node=last.node, elapsed_s=last.elapsed_s,
                                    reason=f"slurmctld unreachable; accounting last recorded {last.raw or last.state}",
                                    raw=last.raw)
    _add_node_reasons(states)
    return states, note, down


def _add_node_reasons(states: dict[str, SchedState]) -> None:
    """A job that failed with its node, was requeued off it (pending, "BeginTime", its node still named) or
    waits for one says why the node is out (`sinfo -R`, one call, only then): SLURM's own reason does not."""
    hit = [j for j, s in states.items() if s.state == "node_fail" or (s.state == "pending" and (
        "node" in s.reason.lower() or (s.reason == "BeginTime" and s.node)))]
    if not hit:
        return
    try:
        nodes = commands.node_reasons()
    except (commands.SlurmError, OSError):
        return  # the job's own state and reason still stand
    for job_id in hit:
        state = states[job_id]
        said = "; ".join(f"node {n} {why}" for n, why in sorted(nodes.items()) if not state.node or state.node in n)
        if said:
            states[job_id] = dataclasses.replace(state, reason=f"{state.reason}; {said}" if state.reason else said)


def _controller_down() -> str | None:
    """Why slurmctld does not answer `scontrol ping`, or None when it does."""
    try:
        commands.ping_controller()
    except (commands.SlurmError, OSError) as exc:
        return short_error(exc)
    return None


@contextlib.contextmanager
def outside_enclosing_job() -> Iterator[None]:
    """Hide the variables of the job this submit runs in (a driver job, a pipeline step), so the new
    jobs do not inherit its allocation: submitit's clean_env drops every SLURM_*, SBATCH_*, SRUN_* and
    SUBMITIT_* variable. The site's client configuration (SITE_SLURM_VARIABLES) is kept: on a
    cluster found through SLURM_CONF, sbatch cannot run without it."""
    import submitit.helpers

    site = {name: os.environ[name] for name in SITE_SLURM_VARIABLES if name in os.environ}
    with submitit.helpers.clean_env():
        os.environ.update(site)
        try:
            yield
        finally:
            for name in site:  # clean_env restores its own copy on exit
                os.environ.pop(name, None)


@contextlib.contextmanager
def private_files(active: bool = True) -> Iterator[None]:
    """Files created meanwhile are the owner's only when ``active``: the sbatch script submitit writes
    carries the profile's env values, a secret among them. Otherwise (and for the jobs, always) the
    user's own umask holds: sbatch passes SLURM_UMASK on to the jobs."""
    if not active:
        yield
        return
    previous = os.umask(0o077)
    os.environ["SLURM_UMASK"] = f"{previous:04o}"
    try:
        yield
    finally:
        os.umask(previous)
        os.environ.pop("SLURM_UMASK", None)
