"""Submit a validated matrix: skip what is done or running, group runs into job arrays.

Every job id is recorded in the manifest as it is submitted: a submission is written as
``submitting`` before the backend is called and ``submitted`` with its job ids after, so a crash in
between is visible (and recovered by job name) at the next submit. Submitting returns at
once; it never waits for jobs unless ``--wait`` is given. Which scheduler runs the jobs is the
backend's business (orchestrator/backends/).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.contract import RunDir, RunSpec
from jobs.contract.atomic import sync_filesystem
from orchestrator.backends import registry
from orchestrator.backends.base import Backend, Group, job_name
from orchestrator.backends.slurm import feeder
from orchestrator.errors import RuntimeUserError
from orchestrator.experiment import chain
from orchestrator.experiment.manifest import FAILED, SUBMITTED, SUBMITTING, Attempt, Manifest, Submission
from orchestrator.experiment.plan import Plan, group_runs, plan, split_groups, take_slots
from orchestrator.experiment.store import Experiment
from orchestrator.matrix import Matrix, check_root_writable

log = logging.getLogger(__name__)
KEEP_SUBMISSION_FOLDERS = 50
RECENT_S = 3600.0  # a submission folder younger than this is kept (its jobs may still start)


@dataclass
class Outcome:
    plan: Plan
    executor: str
    submissions: list[Submission] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def choose_executor(matrix: Matrix, override: str | None, dry_run: bool = False) -> str:
    """The backend's name for the matrix's executor (or ``--executor``); ``auto`` picks one here."""
    return registry.choose(override or matrix.executor, dry_run).name


def submit(matrix: Matrix, specs: list[RunSpec], executor_kind: str, *, retry_failed: bool = False,
           force: frozenset[str] = frozenset(), cwd: Path) -> Outcome:
    """Write specs and submit the new runs, one job array per resource group."""
    check_root_writable(matrix)
    experiment = Experiment(matrix.experiment_dir)
    backend = registry.get(executor_kind)
    with experiment.locked():
        manifest = experiment.read_manifest()
        recover_interrupted(experiment, manifest)
        the_plan = plan(matrix, specs, manifest, experiment, retry_failed, force)
        outcome = Outcome(plan=the_plan, executor=executor_kind)
        outcome.warnings += chain.hold_back(the_plan, manifest, experiment)
        manifest.experiment, manifest.baseline = matrix.experiment, matrix.baseline
        manifest.matrix_path, manifest.matrix_sha256 = str(matrix.source), matrix.sha256
        manifest.cluster = matrix.profile.name
        manifest.current_runs = {s.run_name: s.run_id for s in matrix.runs}
        manifest.record_sources(matrix.runs)  # status reads which runs have a source here, not in 10,000 specs
        write_specs(experiment, the_plan.new)
        if the_plan.new:  # the manifest is written before the first sbatch
            submit_runs(experiment, manifest, matrix, the_plan.new, backend, outcome, cwd)
        else:
            experiment.write_manifest(manifest)
        prune_submission_folders(experiment, manifest)
    return outcome


def write_specs(experiment: Experiment, specs: list[RunSpec]) -> None:
    """Each new run's directory and spec.json, durable before any job can read it: written without an
    fsync each, then the filesystem synced once (10,000 fsyncs took seconds, each an ext4 journal commit;
    cProfile of a 10,000-run submit)."""
    for spec in specs:
        _prepare_run_dir(experiment, spec)
    if specs:
        sync_filesystem(experiment.runs_dir)


class Recorder:
    """The manifest's writes during one submit. A submission is on record as ``submitting`` before its
    sbatch; what came of it is written with the next submission's record, or at the end: one write a
    job array instead of two (a 10,000-run manifest takes a quarter second to write). A kill in between
    leaves the submission ``submitting``, which the next submit recovers by job name."""

    def __init__(self, experiment: Experiment, manifest: Manifest) -> None:
        self.experiment, self.manifest, self.unsaved = experiment, manifest, False

    def save(self) -> None:
        self.experiment.write_manifest(self.manifest)
        self.unsaved = False

    def save_later(self) -> None:
        self.unsaved = True

    def flush(self) -> None:
        if self.unsaved:
            self.save()


def submit_chain(record: Recorder, matrix: Matrix, new: list[RunSpec], backend: Backend, max_array: int,
                 notes: list[str]) -> list[Submission]:
    """Sources before dependents (init_from): each dependent array waits for its source's job."""
    experiment, manifest = record.experiment, record.manifest
    entries: list[Submission] = []
    submitted: dict[str, str] = {}  # run id -> job id of this submit
    failed: set[str] = set()
    for wave in chain.waves(new):
        ready, skipped = chain.not_ready(wave, failed)
        notes += skipped
        jobs = {spec.run_id: chain.source_job(spec, submitted, manifest, experiment) for spec in ready}
        for after, runs in chain.by_source(ready, jobs):
            for resources_key, chunk in split_groups(group_runs(runs), max_array):
                entry = submit_group(record, matrix, chunk, backend, resources_key, after)
                entries.append(entry)
                if entry.state == FAILED:
                    failed.update(entry.run_ids)
                for run_id in entry.run_ids:
                    attempt = manifest.latest_attempt(run_id)
                    if entry.state != FAILED and attempt is not None and attempt.job_id:
                        submitted[run_id] = attempt.job_id
    return entries


def submit_runs(experiment: Experiment, manifest: Manifest, matrix: Matrix, runs: list[RunSpec], backend: Backend,
                outcome: Outcome, cwd: Path) -> None:
    """Submit what the job cap allows, one array per resource group; record the rest as waiting for
    a slot and, unless a live feeder job already feeds them, submit one (backends/slurm/feeder.py).
    Called under the experiment lock, by submit and by the feeder job (orchestrator/feed.py)."""
    limits = backend.limits(matrix, len(runs))
    outcome.warnings += limits.notes
    now, later = take_slots(runs, limits.free_slots)
    record = Recorder(experiment, manifest)
    # the waiting runs are on record before anything is submitted (with the first submission's record, or
    # below); a run leaves the list only when its attempt is recorded (record_attempts), so status never
    # sees a fed run as neither waiting nor submitted
    manifest.waiting += [s.run_id for s in later if s.run_id not in manifest.waiting]
    record.save_later()
    try:
        # the runs come sources first, so a dependent submitted now has its source submitted now or before
        outcome.submissions += submit_chain(record, matrix, now, backend, limits.max_array_size, outcome.warnings)
        outcome.plan.waiting += later
        if not manifest.waiting and manifest.feeder is not None:
            manifest.feeder = None
    finally:
        record.flush()
    if later and not outcome.plan.feeding:  # a live feeder takes every waiting run, old or new
        after = sorted({j.split("_")[0] for s in outcome.submissions if s.state == SUBMITTED for j in s.job_ids},
                       key=lambda j: (len(j), j))  # an array's id stands for all of its tasks
        if limits.free_slots == 0:
            outcome.plan.feeder = (f"no slot free under {limits.cap}, not even for a feeder job: run "
                                   "`orchestrate submit` again when jobs have ended")
            return
        feeder_record = feeder.schedule(experiment, manifest, matrix, later[0].resources, after, limits.cap, cwd,
                                        backend.name)
        outcome.plan.feeder = (f"feeder job {feeder_record.job_id} submits them as runs end ({limits.cap})"
                               if feeder_record.job_id else f"the feeder job could not be submitted "
                               f"({feeder_record.error}): run `orchestrate submit` again")


def _prepare_run_dir(experiment: Experiment, spec: RunSpec) -> None:
    """The run's directory, its earlier result archived, its spec.json written (durably)."""
    run_dir = experiment.run_dir(spec.run_id)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    _archive_previous_result(run_dir)
    run_dir.write_spec(spec, durable=False)  # synced with the others: write_specs


def _archive_previous_result(run_dir: RunDir) -> None:
    """A forced rerun keeps the earlier result beside, under previous/<time>/, never deletes it."""
    if not run_dir.result_path.exists():
        return
    target = run_dir.path / "previous" / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for path in (run_dir.result_path, run_dir.failure_path, run_dir.metrics_path):
        if path.exists():
            os.replace(path, target / path.name)


def prune_submission_folders(experiment: Experiment, manifest: Manifest) -> None:
    """Delete submitit folders whose runs have all finished or been resubmitted since,
    keeping the newest KEEP_SUBMISSION_FOLDERS."""
    submissions = manifest.submissions
    latest = {run_id: run.attempts[-1].submission for run_id, run in manifest.runs.items() if run.attempts}
    ordered = sorted(submissions, key=lambda t: submissions[t].started_at)
    for token in ordered[:-KEEP_SUBMISSION_FOLDERS] if len(ordered) > KEEP_SUBMISSION_FOLDERS else ordered:
        entry = submissions[token]
        superseded = all(latest.get(r) != token or experiment.run_dir(r).result_path.exists() for r in entry.run_ids)
        if superseded and entry.state in ("submitted", "finished", "failed") and len(ordered) > 1:
            folder = experiment.submitit_dir / token
            if folder.is_dir() and time.time() - entry.started_at >= RECENT_S:
                shutil.rmtree(folder, ignore_errors=True)
                entry.pruned = True


def new_token() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def failed_text(p: Plan) -> str:
    """What happens to the runs that failed before: resubmitted (``--retry-failed``) or skipped."""
    if p.resubmitted:
        return f"{p.resubmitted} failed before, resubmitted (--retry-failed)" + (
            f", {len(p.failed)} failed before (skipped)" if p.failed else "")
    return f"{len(p.failed)} failed before (resubmit with --retry-failed)"


def print_summary(outcome: Outcome, experiment: Experiment, out: Any = None) -> None:
    out = out or sys.stdout
    p = outcome.plan
    print(f"experiment {experiment.path.name}: {len(p.new)} new, {len(p.done)} skipped as done, "
          f"{len(p.active)} skipped as running or pending, {failed_text(p)}", file=out)
    for spec, state in p.active:
        print(f"  skip {spec.run_name}: {state}", file=out)
    for spec in p.failed:
        print(f"  skip {spec.run_name}: failed before (see `orchestrate status`)", file=out)
    for run_name, note in p.retried:
        print(f"  retry {run_name}: {note}", file=out)
    for entry in outcome.submissions:
        if entry.state == FAILED:  # the reason follows as the command's error
            print(f"  not submitted: {len(entry.run_ids)} run(s) (submission {entry.token} failed)", file=out)
            continue
        ids = entry.array_job_id or ", ".join(entry.job_ids[:3])
        where = f"as {outcome.executor} job {ids}" if ids else f"as {outcome.executor} jobs"  # local: ids come later
        print(f"  submitted {len(entry.run_ids)} run(s) {where} (logs: {entry.folder})", file=out)
    if p.waiting:
        print(f"  {len(p.waiting)} run(s) waiting for a slot: {p.feeder}", file=out)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=out)
    if p.note:
        print(f"note: {p.note}", file=out)
    print(f"runs: {experiment.runs_dir}", file=out)


def raise_if_failed(outcome: Outcome) -> None:
    failed = [s for s in outcome.submissions if s.state == FAILED]
    if failed:
        raise RuntimeUserError("; ".join(f"submission {s.token} failed: {s.error}" for s in failed))


def submit_group(record: Recorder, matrix: Matrix, chunk: list[RunSpec], backend: Backend, group: str,
                 after_job: str | None = None) -> Submission:
    """Record, submit, record: the manifest never misses a job that reached the scheduler (the second
    record is written with the next submission's first, or when the submit ends: Recorder)."""
    experiment, manifest = record.experiment, record.manifest
    token = new_token()
    folder = experiment.submitit_dir / token
    entry = Submission(token=token, group=group, state=SUBMITTING, executor=backend.name,
                       run_ids=[s.run_id for s in chunk], job_name=job_name(matrix.experiment, token),
                       folder=str(folder), started_at=time.time())
    manifest.submissions[token] = entry
    record.save()
    request = Group(experiment=experiment, matrix=matrix, runs=chunk, folder=folder, job_name=entry.job_name,
                    after_job=after_job)
    try:
        job_ids = backend.submit(request)
    except Exception as exc:  # noqa: BLE001 - recorded, then re-raised as a user-facing failure
        entry.state = FAILED
        entry.error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        record.save_later()
        return entry
    record_attempts(manifest, chunk, job_ids, token, backend)
    entry.state, entry.job_ids = SUBMITTED, [j for j in job_ids if j]
    entry.array_job_id, entry.submitted_at = (job_ids[0] or "").split("_")[0] or None, time.time()
    backend.launch(request, entry, record.save)
    record.save_later()
    return entry


def record_attempts(manifest: Manifest, chunk: Sequence[RunSpec | RunRef], job_ids: list[str | None], token: str,
                    backend: Backend) -> None:
    """One new attempt a run, in array task order."""
    now = time.time()
    recorded = {spec.run_id for spec in chunk}
    manifest.waiting = [r for r in manifest.waiting if r not in recorded]  # a submitted run waits no more
    for spec, job_id in zip(chunk, job_ids):
        attempt = Attempt(job_id=job_id, submission=token, submitted_at=now, executor=backend.name)
        if backend.initial_attempt_state is not None:
            attempt.state = backend.initial_attempt_state
        if spec.adaptation is not None:  # resubmitted with a smaller micro-batch after a CUDA OOM
            attempt.adapted = spec.adaptation.model_dump(mode="json")
        manifest.add_attempt(spec.run_id, spec.run_name, attempt)


def recover_interrupted(experiment: Experiment, manifest: Manifest) -> None:
    """A submission left 'submitting' (orchestrate was killed mid-submit): find its jobs by
    name in the scheduler and record them, or mark it failed if the scheduler never got it."""
    changed = False
    for token, entry in manifest.submissions.items():
        if entry.state != SUBMITTING:
            continue
        backend = registry.get(entry.executor)
        try:
            found = backend.find_submitted(entry)
        except Exception as exc:  # noqa: BLE001 - the scheduler could not be asked: keep it for the next submit
            log.warning("could not check interrupted submission %s: %s", token, exc)
            continue
        if found:
            runs = [_recorded_spec(experiment, r) for r in entry.run_ids]
            ids = [found.get(index) for index in range(len(runs))]
            if len(runs) == 1 and not ids[0]:
                ids = [next(iter(found.values()))]
            record_attempts(manifest, runs, ids, token, backend)
            entry.state, entry.recovered, entry.job_ids = SUBMITTED, True, [i for i in ids if i]
        else:
            entry.state, entry.error = FAILED, "interrupted before the scheduler accepted it"
        changed = True
    if changed:
        experiment.write_manifest(manifest)


def _recorded_spec(experiment: Experiment, run_id: str) -> RunSpec | RunRef:
    """The spec.json submit wrote before the backend ran (it carries an OOM adaptation), or, where it
    cannot be read, what the run id alone says."""
    try:
        return experiment.run_dir(run_id).read_spec()
    except (OSError, ValueError):
        return RunRef(run_id)


class RunRef:
    """Enough of a RunSpec for record_attempts when only the run id is known."""

    adaptation = None  # not known without spec.json

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.run_name = run_id.rsplit("-", 1)[0]
