"""The feeder job of a capped study: a tiny SLURM job that submits the runs waiting for a slot.

When MaxSubmitJobs leaves no slot for some runs, submit queues what fits and, as the last job the
cap allows, this job with ``--dependency=afterany:<those arrays>``. When they have all ended it runs
``python -m orchestrator.feed EXPERIMENT_DIR`` (the login node's interpreter, as the run scripts do),
which submits the next runs and the next feeder: a chain that needs no process on the login node,
so it survives logout. Its record (``manifest.feeder``) is written as ``submitting`` before sbatch.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.contract import Resources
from orchestrator.backends.base import short_error
from orchestrator.backends.slurm import commands
from orchestrator.backends.slurm.backend import outside_enclosing_job
from orchestrator.backends.slurm.script import sbatch_parameters
from orchestrator.errors import RuntimeUserError
from orchestrator.experiment.manifest import FAILED, SUBMITTED, SUBMITTING, Feeder, Manifest
from orchestrator.experiment.store import Experiment

if TYPE_CHECKING:
    from orchestrator.matrix import Matrix

RETRY_AFTER_S = 120  # no run could be queued (no free slot): the feeder tries again this much later
FEEDER_TIME_MIN = 30  # above orchestrator.feed's wait for room (7 min) and lock timeout (10 min) together
FEEDER_MEM_MB = 1024
ALIVE = frozenset({"pending", "running", "requeued", "completing", "configuring", "suspended", "resizing"})


def schedule(experiment: Experiment, manifest: Manifest, matrix: Matrix, resources: Resources,
             after: list[str], cap: str, cwd: Path, executor: str = "slurm") -> Feeder:
    """Submit the feeder job (after the jobs ``after``, or RETRY_AFTER_S from now when empty) and
    record it in the manifest, written before and after sbatch."""
    token = time.strftime("%Y%m%d-%H%M%S")
    record = Feeder(job_name=f"orc.{matrix.experiment}.feed-{token}", state=SUBMITTING, after=after,
                    cap=cap, executor=executor, cwd=str(cwd), submitted_at=time.time())
    manifest.feeder = record
    experiment.write_manifest(manifest)
    log_dir = experiment.path / "feeder"
    log_dir.mkdir(parents=True, exist_ok=True)
    params = sbatch_parameters(matrix, resources, record.job_name)
    if matrix.profile.feeder_partition:  # the profile's CPU partition, not the first waiting run's GPU one
        params["partition"] = matrix.profile.feeder_partition
    args = [f"--job-name={record.job_name}", f"--output={log_dir}/%j.log", f"--chdir={cwd}",
            f"--time={FEEDER_TIME_MIN}", "--cpus-per-task=1", f"--mem={FEEDER_MEM_MB}M"]
    args += [f"--{key}={params[key]}" for key in ("partition", "account", "qos") if params.get(key)]
    if after:  # afterany: a failed or cancelled run frees its slot as well as a finished one
        args += [f"--dependency=afterany:{':'.join(after)}", "--kill-on-invalid-dep=no"]
    else:
        args.append(f"--begin=now+{RETRY_AFTER_S}")
    command = [sys.executable, "-m", "orchestrator.feed", str(experiment.path)]
    try:
        with outside_enclosing_job():
            record.job_id = commands.sbatch([*args, "--wrap", shlex.join(command)])
    except (commands.SlurmError, OSError) as exc:
        record.state, record.error = FAILED, f"sbatch: {short_error(exc)}"
    else:
        record.state = SUBMITTED
    experiment.write_manifest(manifest)
    return record


def feeder_state(manifest: Manifest) -> tuple[bool, str]:
    """Whether the recorded feeder may still run (True also when SLURM cannot be asked: never feed
    twice on a guess), and a sentence about it for status and submit."""
    record = manifest.feeder
    if record is None:
        return False, "no feeder job is recorded"
    if record.state == FAILED:
        return False, f"the feeder job failed ({record.error})"
    try:
        if record.job_id is None:  # interrupted between the record and sbatch: find it by name
            found = commands.jobs_by_name(record.job_name)
            if not found:
                return False, "the feeder job was never submitted (interrupted)"
            record.job_id = found[max(found)]
        states = commands.squeue_states([record.job_id])
    except (commands.SlurmError, OSError) as exc:
        return True, f"feeder job {record.job_id or record.job_name} (SLURM could not be asked: {short_error(exc)})"
    state = states.get(record.job_id)
    if state is not None and state.state in ALIVE:
        return True, f"feeder job {record.job_id} submits them as runs end"
    said = f"ended ({state.raw_state})" if state is not None else "is no longer known to SLURM"
    return False, f"feeder job {record.job_id} {said}"


def forget_waiting(manifest: Manifest, run_ids: list[str]) -> list[str]:
    """Cancel runs still waiting for a slot: they leave the waiting list (status: not submitted), and
    when none is left the feeder job is cancelled (``scancel``; one already ended is no error).
    Returns the run ids that were waiting. Raises RuntimeUserError when the feeder cannot be cancelled."""
    dropped = [r for r in run_ids if r in manifest.waiting]
    manifest.waiting = [r for r in manifest.waiting if r not in dropped]
    if not manifest.waiting and manifest.feeder is not None:
        if manifest.feeder.job_id:
            try:
                commands.scancel([manifest.feeder.job_id])
            except (commands.SlurmError, OSError) as exc:
                raise RuntimeUserError(f"could not cancel feeder job {manifest.feeder.job_id} ({short_error(exc)}); "
                                       "nothing was recorded: run `orchestrate cancel` again once `squeue` works") from exc
        manifest.feeder = None
    return dropped
