"""Submitting a chain of runs (``init_from``) at once: sources before dependents, each dependent's job
array held by the scheduler until its source's job has completed (SLURM ``--dependency=afterok:`` on the
source's array task), so one ``orchestrate submit`` runs the whole chain with nobody on the login node.

A dependent whose source is neither done, nor running, nor submitted now (its source failed before and
``--retry-failed`` was not given) is held back with a note, never submitted to fail at once.
"""

from __future__ import annotations

from collections.abc import Iterator

from jobs.contract import RunSpec
from orchestrator.experiment.manifest import Manifest
from orchestrator.experiment.plan import Plan
from orchestrator.experiment.store import Experiment


def hold_back(the_plan: Plan, manifest: Manifest, experiment: Experiment) -> list[str]:
    """Drop from ``the_plan.new`` the dependents whose source will not run; the notes saying so."""
    new_ids = {spec.run_id for spec in the_plan.new}
    active_ids = {spec.run_id for spec, _ in the_plan.active}
    notes: list[str] = []
    kept: list[RunSpec] = []
    held: set[str] = set()
    for spec in the_plan.new:  # sources come first (the matrix's order): a held source holds its dependents
        ref = spec.source
        if ref is not None and (ref.run_id in held or not (
                ref.run_id in new_ids or ref.run_id in active_ids
                or experiment.run_dir(ref.run_id).result_path.exists())):
            held.add(spec.run_id)
            why = ("it failed before: `orchestrate submit --retry-failed` reruns the chain"
                   if manifest.latest_attempt(ref.run_id) is not None or ref.run_id in held
                   else f"it was never submitted (left out by --only?): include it, e.g. --only "
                        f"{ref.run_name},{spec.run_name}")
            notes.append(f"skip {spec.run_name}: its source {ref.run_name} has no result and is not submitted "
                         f"now ({why})")
            continue
        kept.append(spec)
    the_plan.new = kept
    return notes


def waves(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """``specs`` in waves: the first has no source among ``specs``, each later one's sources are in earlier ones."""
    depth: dict[str, int] = {}
    ids = {spec.run_id for spec in specs}
    for spec in specs:  # sources come first, so a source's depth is known before its dependents'
        source = spec.source.run_id if spec.source is not None and spec.source.run_id in ids else None
        depth[spec.run_id] = depth.get(source, -1) + 1 if source is not None else 0
    count = max(depth.values(), default=-1) + 1
    return [[spec for spec in specs if depth[spec.run_id] == level] for level in range(count)]


def not_ready(wave: list[RunSpec], failed: set[str]) -> tuple[list[RunSpec], list[str]]:
    """The runs of ``wave`` whose source's submission did not fail now, and a note for each other."""
    ready = [spec for spec in wave if spec.source is None or spec.source.run_id not in failed]
    notes = [f"skip {spec.run_name}: the submission of its source {spec.source.run_name} failed"
             for spec in wave if spec.source is not None and spec.source.run_id in failed]
    failed.update(spec.run_id for spec in wave if spec.source is not None and spec.source.run_id in failed)
    return ready, notes


def source_job(spec: RunSpec, submitted: dict[str, str], manifest: Manifest, experiment: Experiment) -> str | None:
    """The scheduler job the dependent must wait for: its source's job submitted now, or the one still
    running from an earlier submit; None when the source has its result (or the run has no source)."""
    ref = spec.source
    if ref is None or experiment.run_dir(ref.run_id).result_path.exists():
        return None
    if ref.run_id in submitted:
        return submitted[ref.run_id]
    attempt = manifest.latest_attempt(ref.run_id)
    return attempt.job_id if attempt is not None and attempt.job_id and attempt.executor == "slurm" else None


def by_source(specs: list[RunSpec], jobs: dict[str, str | None]) -> Iterator[tuple[str | None, list[RunSpec]]]:
    """``specs`` split by the job they wait for (one job array waits for one source task), in order."""
    groups: dict[str | None, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(jobs.get(spec.run_id), []).append(spec)
    yield from groups.items()
