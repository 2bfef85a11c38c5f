"""Submit a validated matrix: skip what is done or running, group runs into job arrays.

Every job id is recorded in the manifest as it is submitted: a submission is written as
``submitting`` before sbatch runs and ``submitted`` with its job ids after, so a crash in
between is visible (and recovered by job name) at the next submit. Submitting returns at
once; it never waits for jobs unless ``--wait`` is given.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.contract import RunDir, RunSpec
from orchestrator import executors, oomretry, slurm
from orchestrator.errors import RuntimeUserError, UserError
from orchestrator.jobstate import scheduler_states
from orchestrator.matrix import Matrix, check_root_writable, matches, name_patterns
from orchestrator.store import Experiment

log = logging.getLogger(__name__)
KEEP_SUBMISSION_FOLDERS = 50


@dataclass
class Plan:
    """What a submit will do, run by run."""

    new: list[RunSpec] = field(default_factory=list)
    done: list[RunSpec] = field(default_factory=list)
    active: list[tuple[RunSpec, str]] = field(default_factory=list)  # (spec, state)
    failed: list[RunSpec] = field(default_factory=list)  # skipped: failed before; --retry-failed resubmits
    resubmitted: int = 0  # of ``new``: runs that failed before, resubmitted by --retry-failed
    note: str | None = None
    retried: list[tuple[str, str]] = field(default_factory=list)  # (run name, what --retry-failed changed or kept)


@dataclass
class Outcome:
    plan: Plan
    executor: str
    submissions: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def choose_executor(matrix: Matrix, override: str | None, dry_run: bool = False) -> str:
    """slurm or local. A dry run of a SLURM matrix renders its scripts even where sbatch is missing
    (writing the matrix on a laptop)."""
    wanted = override or matrix.executor
    if wanted == "auto":
        return "slurm" if slurm.slurm_available() else "local"
    if wanted == "slurm" and not slurm.slurm_available() and not dry_run:
        raise UserError("executor: slurm, but sbatch is not on the PATH; use executor: local (or auto)")
    return wanted


def plan(matrix: Matrix, specs: list[RunSpec], manifest: dict[str, Any], experiment: Experiment,
         retry_failed: bool = False, force: frozenset[str] = frozenset()) -> Plan:
    """Sort runs into new / done / active / failed, asking the scheduler once."""
    result = Plan()
    states, result.note = scheduler_states(manifest, [s.run_id for s in specs])
    for spec in specs:
        run_dir = experiment.run_dir(spec.run_id)
        forced = spec.run_id in force or matches(spec.run_name, spec.base_name, name_patterns(sorted(force)))
        state = states.get(spec.run_id)
        if run_dir.result_path.exists() and not forced:
            result.done.append(spec)  # done is done, even while its process is still exiting
        elif state is not None and (state.active or state.state == "unknown"):
            # a job SLURM still knows, or may know, is never submitted twice: not even with --force
            result.active.append((spec, state.state if state.active else f"unknown ({state.reason})"))
        elif forced:
            result.new.append(spec)
        elif spec.run_id in manifest.get("runs", {}) and manifest["runs"][spec.run_id].get("attempts"):
            if not retry_failed:
                result.failed.append(spec)
                continue
            retry = oomretry.retry_of(spec, run_dir)  # a CUDA OOM may shrink the micro-batch (oom_retry)
            result.new.append(retry.spec)
            result.resubmitted += 1
            if retry.note:
                result.retried.append((spec.run_name, retry.note))
        else:
            result.new.append(spec)
    return result


def submit(matrix: Matrix, specs: list[RunSpec], executor_kind: str, *, retry_failed: bool = False,
           force: frozenset[str] = frozenset(), cwd: Path) -> Outcome:
    """Write specs and submit the new runs, one job array per resource group."""
    check_root_writable(matrix)
    experiment = Experiment(matrix.experiment_dir)
    with experiment.locked():
        manifest = experiment.read_manifest()
        executors.recover_interrupted(experiment, manifest)
        the_plan = plan(matrix, specs, manifest, experiment, retry_failed, force)
        outcome = Outcome(plan=the_plan, executor=executor_kind)
        manifest.update(experiment=matrix.experiment, baseline=matrix.baseline, matrix_path=str(matrix.source),
                        matrix_sha256=matrix.sha256, cluster=matrix.profile.name,
                        current_runs={s.run_name: s.run_id for s in matrix.runs})
        experiment.write_manifest(manifest)
        for spec in the_plan.new:
            run_dir = experiment.run_dir(spec.run_id)
            run_dir.path.mkdir(parents=True, exist_ok=True)
            _archive_previous_result(run_dir)
            run_dir.write_spec(spec)
        if the_plan.new:
            groups = group_runs(the_plan.new)
            outcome.warnings += executors.limit_warnings(executor_kind, len(the_plan.new))
            max_array, unchecked = executors.cluster_limits(executor_kind, matrix.profile)
            outcome.warnings += unchecked
            for resources_key, chunk in split_groups(groups, max_array):
                outcome.submissions.append(
                    executors.submit_chunk(experiment, manifest, matrix, chunk, executor_kind, resources_key))
        prune_submission_folders(experiment, manifest)
    return outcome


def _archive_previous_result(run_dir: RunDir) -> None:
    """A forced rerun keeps the earlier result beside, under previous/<time>/, never deletes it."""
    if not run_dir.result_path.exists():
        return
    target = run_dir.path / "previous" / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for path in (run_dir.result_path, run_dir.failure_path, run_dir.metrics_path):
        if path.exists():
            os.replace(path, target / path.name)


def group_runs(specs: list[RunSpec]) -> dict[str, list[RunSpec]]:
    """Runs with identical resources share one array."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.resources.group_key(), []).append(spec)
    return groups


def split_groups(groups: dict[str, list[RunSpec]], max_array: int) -> list[tuple[str, list[RunSpec]]]:
    """Split each group into arrays of at most ``max_array`` tasks (indices 0..max_array-1)."""
    chunks = []
    for key, specs in groups.items():
        for start in range(0, len(specs), max_array):
            chunks.append((key, specs[start:start + max_array]))
    return chunks


def prune_submission_folders(experiment: Experiment, manifest: dict[str, Any]) -> None:
    """Delete submitit folders whose runs have all finished or been resubmitted since,
    keeping the newest KEEP_SUBMISSION_FOLDERS."""
    submissions = manifest.get("submissions", {})
    latest = {run_id: info["attempts"][-1].get("submission") for run_id, info in manifest.get("runs", {}).items()
              if info.get("attempts")}
    ordered = sorted(submissions, key=lambda t: submissions[t].get("started_at", 0))
    for token in ordered[:-KEEP_SUBMISSION_FOLDERS] if len(ordered) > KEEP_SUBMISSION_FOLDERS else ordered:
        entry = submissions[token]
        run_ids = entry.get("run_ids", [])
        superseded = all(latest.get(r) != token or experiment.run_dir(r).result_path.exists() for r in run_ids)
        if superseded and entry.get("state") in ("submitted", "finished", "failed") and len(ordered) > 1:
            folder = experiment.submitit_dir / token
            if folder.is_dir() and not _recent(entry):
                shutil.rmtree(folder, ignore_errors=True)
                entry["pruned"] = True


def _recent(entry: dict[str, Any], seconds: float = 3600.0) -> bool:
    return time.time() - float(entry.get("started_at", 0)) < seconds


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
        if entry.get("state") == "failed":  # the reason follows as the command's error
            print(f"  not submitted: {len(entry['run_ids'])} run(s) (submission {entry['token']} failed)", file=out)
            continue
        ids = entry.get("array_job_id") or ", ".join(entry.get("job_ids", [])[:3])
        where = f"as {outcome.executor} job {ids}" if ids else f"as {outcome.executor} jobs"  # local: ids come later
        print(f"  submitted {len(entry['run_ids'])} run(s) {where} (logs: {entry['folder']})", file=out)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=out)
    if p.note:
        print(f"note: {p.note}", file=out)
    print(f"runs: {experiment.runs_dir}", file=out)


def raise_if_failed(outcome: Outcome) -> None:
    failed = [s for s in outcome.submissions if s.get("state") == "failed"]
    if failed:
        raise RuntimeUserError("; ".join(f"submission {s['token']} failed: {s.get('error')}" for s in failed))
