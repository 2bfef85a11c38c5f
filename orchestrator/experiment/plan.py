"""What a submit will do, run by run: new, done, active (never submitted twice), failed before or
waiting for a slot (a job cap held it back and a live feeder job will submit it); how many of the new
runs fit under the cap now; and how they group into job arrays (equal resources share one, split at
the backend's limit)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.contract import RunSpec
from orchestrator import oomretry
from orchestrator.backends import registry
from orchestrator.backends.slurm.feeder import feeder_state
from orchestrator.experiment.manifest import Manifest
from orchestrator.experiment.store import Experiment
from orchestrator.matrix import Matrix, matches, name_patterns


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
    waiting: list[RunSpec] = field(default_factory=list)  # held back by a job cap: a feeder job submits them
    feeder: str = ""  # what the feeder job does, for the summary
    feeding: bool = False  # a live feeder job is recorded: it submits every waiting run


def plan(matrix: Matrix, specs: list[RunSpec], manifest: Manifest, experiment: Experiment,
         retry_failed: bool = False, force: frozenset[str] = frozenset()) -> Plan:
    """Sort runs into new / done / active / failed, asking the scheduler once."""
    result = Plan()
    states, result.note = registry.scheduler_states(manifest, [s.run_id for s in specs])
    waiting = set(manifest.waiting)
    if waiting:  # a live feeder submits these; a dead one leaves them to this submit (restarting the feed)
        result.feeding, result.feeder = feeder_state(manifest)
    for spec in specs:
        run_dir = experiment.run_dir(spec.run_id)
        forced = spec.run_id in force or matches(spec.run_name, spec.base_name, name_patterns(sorted(force)))
        state = states.get(spec.run_id)
        if run_dir.result_path.exists() and not forced:
            result.done.append(spec)  # done is done, even while its process is still exiting
        elif state is not None and (state.active or state.state == "unknown"):
            # a job SLURM still knows, or may know, is never submitted twice: not even with --force
            result.active.append((spec, state.state if state.active else f"unknown ({state.reason})"))
        elif spec.run_id in waiting:
            (result.waiting if result.feeding else result.new).append(spec)
        elif forced:
            result.new.append(spec)
        elif manifest.latest_attempt(spec.run_id) is not None:
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


def take_slots(new: list[RunSpec], free_slots: int | None) -> tuple[list[RunSpec], list[RunSpec]]:
    """(runs to submit now, runs to wait for a slot) under a job cap with ``free_slots`` free (None:
    no cap). When some must wait, one slot is kept for the feeder job that submits them later."""
    if free_slots is None or len(new) <= free_slots:
        return list(new), []
    now = max(0, free_slots - 1)
    return new[:now], new[now:]
