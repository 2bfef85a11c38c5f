"""Status of the runs that start from another run (init_from): why a dependent waits or never ran.

SLURM holds a dependent with reason ``Dependency`` while its source runs; when the source fails, the
dependency can never be satisfied: the job is cancelled (submit passes ``--kill-on-invalid-dep=yes``)
or, where that was not honoured, stays pending with reason ``DependencyNeverSatisfied``. Either way the
row says so in the source's words: ``cancelled: source run T-seed1 failed (...)``, not pending forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.experiment.manifest import Manifest, SourceOf
from orchestrator.experiment.store import Experiment

if TYPE_CHECKING:
    from jobs.contract.sources import SourceRef
    from orchestrator.status import RunStatus

NEVER_SATISFIED = "DependencyNeverSatisfied"


def explain_dependents(experiment: Experiment, manifest: Manifest, rows: list[RunStatus]) -> None:
    """Rewrite, in place, the state and reason of each dependent row waiting for or cancelled by its source.

    Which runs have a source: the manifest's record of the current matrix (submit writes it); a run it
    does not cover (an older manifest, a stale run shown by ``--all``) has its spec.json read. Only a
    pending, cancelled or not-submitted row can change, so only those are looked up."""
    by_id = {row.run_id: row for row in rows}
    recorded = manifest.recorded_sources()
    current = frozenset(manifest.current_runs.values()) if recorded is not None else frozenset()
    for row in rows:
        if row.state not in ("pending", "cancelled", "not submitted"):
            continue
        ref: SourceOf | SourceRef | None
        if row.run_id in current:
            ref = recorded.get(row.run_id) if recorded is not None else None
        else:
            try:
                ref = experiment.run_dir(row.run_id).read_spec().source
            except (OSError, ValueError):
                continue
        if ref is None:
            continue
        source = by_id.get(ref.run_id)
        said = f"source run {ref.run_name} {source.state if source is not None else 'is not in this status'}"
        never = row.state == "pending" and NEVER_SATISFIED in row.reason
        source_failed = source is not None and source.ended and source.state != "completed"
        if never or (row.state == "cancelled" and source_failed):
            scheduler = f"; SLURM: {NEVER_SATISFIED}" if never else ""
            row.state, row.reason = "cancelled", (f"{said} ({source.reason if source is not None else ''}): this run "
                                                  f"never started{scheduler}; `orchestrate submit --retry-failed` "
                                                  "reruns the chain")
        elif row.state == "not submitted" and source_failed:  # held back by submit or the feeder job
            row.reason = (f"{said}{f' ({source.reason})' if source is not None and source.reason else ''}: held "
                          "back; `orchestrate submit --retry-failed` reruns the chain")
        elif row.state == "pending":
            row.reason = f"waiting for {said}" + (f" ({row.reason})" if row.reason else "")
