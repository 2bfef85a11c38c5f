"""Submitting a chain of runs (``init_from``) at once: sources before dependents, each dependent's job
array held by the scheduler until its source's job has completed (SLURM ``--dependency=afterok:`` on the
source's array task), so one ``orchestrate submit`` runs the whole chain with nobody on the login node.

A dependent whose source is neither done, nor running, nor submitted now (its source failed before and
``--retry-failed`` was not given) is held back with a note, never submitted to fail at once; the feeder
job of a capped study holds back the runs it would feed by the same rule (:func:`hold_back_fed`).

A source saves its final model (``model/``) only when the matrix it was submitted with had a run
starting from it (``RunSpec.save_model``). A new ``init_from`` dependent of a source that completed, or
is still queued or running, without that is refused at submit (:func:`refuse_unexported`), never
submitted to fail at start on a missing ``model/``.
"""

from __future__ import annotations

from collections.abc import Iterator

from jobs.contract import CHECKPOINT_MARKER_FILE, MODEL_EXPORT_DIR, RunDir, RunSpec
from orchestrator.backends import registry
from orchestrator.errors import UserError
from orchestrator.experiment.manifest import Manifest
from orchestrator.experiment.plan import Plan
from orchestrator.experiment.store import Experiment


def hold_back(the_plan: Plan, manifest: Manifest, experiment: Experiment,
              active_ids: set[str] | None = None) -> list[str]:
    """Drop from ``the_plan.new`` the dependents whose source will not run; the notes saying so.
    ``active_ids``: the runs queued or running (default: ``the_plan.active``'s). Raises UserError
    first when a new dependent's source has or will have no ``model/`` (:func:`refuse_unexported`)."""
    refuse_unexported(the_plan, experiment)
    new_ids = {spec.run_id for spec in the_plan.new}
    if active_ids is None:
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


def hold_back_fed(the_plan: Plan, manifest: Manifest, experiment: Experiment) -> list[str]:
    """:func:`hold_back` for the feeder job (orchestrator/feed.py): its plan holds only the waiting runs, so
    the scheduler is asked about the sources fed earlier that have no result yet (one query); a held
    dependent leaves the waiting list (it waits for the user now, not for a slot: the note says what to do)."""
    new_ids = {spec.run_id for spec in the_plan.new}
    asked = sorted({spec.source.run_id for spec in the_plan.new if spec.source is not None
                    and spec.source.run_id not in new_ids
                    and not experiment.run_dir(spec.source.run_id).result_path.exists()})
    states, _ = registry.scheduler_states(manifest, asked) if asked else ({}, None)
    active = {run_id for run_id, state in states.items() if state.active or state.state == "unknown"}
    notes = hold_back(the_plan, manifest, experiment, active)
    kept = {spec.run_id for spec in the_plan.new}
    manifest.waiting = [run_id for run_id in manifest.waiting if run_id in kept]
    return notes


def refuse_unexported(the_plan: Plan, experiment: Experiment) -> None:
    """Raise UserError naming every source that a new ``init_from`` dependent would start from and that
    has no ``model/``: completed (or queued, running) from a submit where no run started from it. The
    fix is to train it again (``--force``), which saves the model, its dependents waiting for it."""
    new_ids = {spec.run_id for spec in the_plan.new}
    active = {spec.run_id: spec for spec, _ in the_plan.active}
    configurations = {spec.run_id: spec.base_name for spec in [*the_plan.done, *active.values()]}
    lacking: dict[str, list[str]] = {}  # source run id -> its dependents' names
    names: dict[str, str] = {}  # source run id -> "T-seed1 (completed)"
    for spec in the_plan.new:
        ref = spec.source
        if ref is None or ref.key != "init_from" or ref.run_id in new_ids:
            continue
        source = experiment.run_dir(ref.run_id)
        if ref.run_id in active:
            if _saves_model(source):
                continue
            names[ref.run_id] = f"{ref.run_name} (queued or running: it will save no {MODEL_EXPORT_DIR}/)"
        elif not source.result_path.exists() or (source.path / MODEL_EXPORT_DIR / CHECKPOINT_MARKER_FILE).exists():
            continue  # no result: hold_back's case (it failed or was never submitted)
        else:
            names[ref.run_id] = f"{ref.run_name} (completed: no {source.path / MODEL_EXPORT_DIR}/)"
        lacking.setdefault(ref.run_id, []).append(spec.run_name)
    if not lacking:
        return
    lines = [f"source run {names[run_id]}: {_some(dependents)} cannot start from it"
             for run_id, dependents in list(lacking.items())[:8]]
    lines += [f"and {len(lacking) - 8} more sources alike"] if len(lacking) > 8 else []
    force = ",".join(names[run_id].split(" ")[0] for run_id in lacking) if len(lacking) <= 8 else \
        ",".join(sorted({configurations.get(run_id, names[run_id].split(" ")[0]) for run_id in lacking}))
    wait = "once the queued or running ones have ended (or `orchestrate cancel` them), " if any(
        run_id in active for run_id in lacking) else ""
    raise UserError("\n".join([
        (f"{len(lacking)} init_from source(s) ran in a submit where no run started from them, so they keep no "
        f"saved model ({MODEL_EXPORT_DIR}/); nothing was submitted:"), *[f"  {line}" for line in lines],
        (f"  fix: {wait}train them again, saving their model: `orchestrate submit MATRIX --force {force}` (their "
        "earlier results are kept under previous/; the dependents wait for them), or drop init_from from the "
        "dependents")]))


def _saves_model(source: RunDir) -> bool:
    """Whether a queued or running source will save its model (its spec.json says so)."""
    try:
        return source.read_spec().save_model
    except (OSError, ValueError):  # unreadable: its job fails at start too; it must be submitted again
        return False


def _some(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


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
