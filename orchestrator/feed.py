"""The feeder job's work: submit the runs waiting for a slot, then the next feeder (``python -m
orchestrator.feed EXPERIMENT_DIR``, run by SLURM from backends/slurm/feeder.py, never by hand).

Nothing twice: it takes the experiment lock, acts only if it is the feeder the manifest records
(a newer submit may have replaced it), and re-derives from the manifest what is still waiting: a run
that has a result, or an attempt newer than this feeder, is no longer fed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from jobs.contract import RunSpec
from orchestrator.backends import registry
from orchestrator.errors import UserError
from orchestrator.experiment import chain
from orchestrator.experiment.manifest import FAILED, Feeder, Manifest
from orchestrator.experiment.plan import Plan
from orchestrator.experiment.store import Experiment
from orchestrator.matrix import load_matrix
from orchestrator.submit import Outcome, print_summary, submit_runs

log = logging.getLogger("orchestrator.feed")
LOCK_TIMEOUT_S = 600.0  # a submit or collect holding the lock ends long before; the job's limit is longer
# slurmctld keeps a finished job, counted against MaxJobCount, for MinJobAge (SLURM's default 300 s): a feeder
# started by the end of the runs it waited for may find no room at first. It waits this long at most, outside
# the lock (with the lock's timeout, inside the feeder job's time limit: backends/slurm/feeder.py).
ROOM_WAIT_S = 420.0
ROOM_POLL_S = 30.0


def still_waiting(experiment: Experiment, manifest: Manifest, record: Feeder) -> list[RunSpec]:
    """The waiting runs to submit now, read from their spec.json (written by the submit that held them
    back, with any OOM adaptation); a run done or submitted since is dropped from the waiting list."""
    specs = []
    for run_id in list(manifest.waiting):
        run_dir = experiment.run_dir(run_id)
        attempt = manifest.latest_attempt(run_id)
        if run_dir.result_path.exists() or (attempt is not None and attempt.submitted_at > record.submitted_at):
            manifest.waiting.remove(run_id)
            continue
        specs.append(run_dir.read_spec())
    return specs


def feed(experiment: Experiment, job_id: str | None) -> Outcome | None:
    """Submit the waiting runs that fit under the cap, and the next feeder if some still wait.
    None when this job is not the recorded feeder (nothing done)."""
    with experiment.locked(LOCK_TIMEOUT_S):
        manifest = experiment.read_manifest()
        record = manifest.feeder
        if record is None or record.job_id != job_id:
            log.warning("feeder job %s is not the recorded feeder (%s): nothing to do", job_id,
                        record.job_id if record else "none")
            return None
        specs = still_waiting(experiment, manifest, record)
        outcome = Outcome(plan=Plan(new=specs), executor=record.executor)
        try:
            # the job runs where submit ran (sbatch --chdir): the matrix path and its root may be relative to it
            path = Path(record.cwd) / (manifest.matrix_path or "")
            _check_unchanged(path, manifest.matrix_sha256)
            matrix = load_matrix(path)
            # a dependent whose source failed, or was never submitted, is not fed (as submit holds it back)
            outcome.warnings += chain.hold_back_fed(outcome.plan, manifest, experiment)
            if outcome.plan.new:
                submit_runs(experiment, manifest, matrix, outcome.plan.new, registry.get(record.executor), outcome,
                            Path(record.cwd))
        except UserError as exc:  # the runs stay waiting; status names this feeder's error
            record.state, record.error = FAILED, f"job {job_id}: {str(exc).splitlines()[0][:200]}"
            experiment.write_manifest(manifest)
            raise
        if manifest.feeder is record:  # consumed; a next feeder, if some runs still wait, replaced it
            manifest.feeder = None
        experiment.write_manifest(manifest)
        return outcome


def wait_for_room(experiment: Experiment, wait_s: float = ROOM_WAIT_S, poll_s: float = ROOM_POLL_S,
                  sleep: Callable[[float], None] = time.sleep) -> None:
    """Before feeding: wait (at most ``wait_s``) until a run and the next feeder job fit under the job caps.
    With no slot free the feeder could submit nothing, not even the next feeder, and the chain would end
    ("run `orchestrate submit` again"); the finished jobs the controller still counts leave after MinJobAge.
    Nothing is written here; feed() decides under the lock."""
    manifest = experiment.read_manifest()
    record = manifest.feeder
    if record is None or not manifest.waiting:
        return
    try:
        matrix = load_matrix(Path(record.cwd) / (manifest.matrix_path or ""))
    except UserError:
        return  # feed() reports it
    backend = registry.get(record.executor)
    waited = 0.0
    while True:
        limits = backend.limits(matrix, len(manifest.waiting))
        if limits.free_slots is None or limits.free_slots >= 2 or waited >= wait_s:
            return
        log.info("%d slot(s) free under %s: waiting %.0f s for finished jobs to leave the count", limits.free_slots,
                 limits.cap, poll_s)
        sleep(poll_s)
        waited += poll_s


def _check_unchanged(path: Path, submitted_sha256: str | None) -> None:
    """Raise UserError when the matrix file differs from the one submitted: the runs come from their
    spec.json, but the cluster profile, preamble and cap come from the matrix, and one edited since would
    feed the waiting runs differently from those already queued (or not at all)."""
    try:
        now = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise UserError(f"the matrix {path} cannot be read ({exc.strerror}): run `orchestrate submit` with "
                        "the matrix to feed the waiting runs") from exc
    if submitted_sha256 and now != submitted_sha256:
        raise UserError(f"the matrix {path} changed since it was submitted (sha256 {submitted_sha256[:12]} then, "
                        f"{now[:12]} now): run `orchestrate submit {path}` to feed the waiting runs as it says now")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if len(args) != 1:
        print("usage: python -m orchestrator.feed EXPERIMENT_DIR", file=sys.stderr)
        return 2
    experiment = Experiment(Path(args[0]))
    try:
        wait_for_room(experiment)
        outcome = feed(experiment, os.environ.get("SLURM_JOB_ID"))
    except UserError as exc:  # the waiting runs stay recorded; status says the feeder ended
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if outcome is not None:
        print_summary(outcome, experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
