"""``submit --dry-run`` for chains (``init_from``, ``data.select_from``) and job caps: what the real
submit does beyond grouping runs by resources.

- Each run's ``wave`` (sources first) and the source run it is submitted after, as one column of the
  runs table; one summary line per pair of configurations (source -> dependent), never one a run.
- The job arrays as ``orchestrator.submit.submit_chain`` splits them: by wave, then by the source job
  each dependent waits for (``--dependency=afterok:``). A source submitted in the same submit has no job
  id yet: ``JOB_OF_<run name>`` stands for it. Arrays alike but for their source job are shown once and counted.
- Under a job cap, which runs wait for a slot and the feeder job's partition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from jobs.contract import RunSpec
from orchestrator.experiment import chain
from orchestrator.experiment.manifest import Manifest
from orchestrator.experiment.plan import group_runs, split_groups
from orchestrator.experiment.store import Experiment
from orchestrator.matrix import Matrix

SHOWN = 8  # names listed before "and N more"


@dataclass(frozen=True)
class Array:
    """One job array the submit would hand to the scheduler: its runs and the source job it waits for."""

    wave: int  # 1 for runs with no source among the new runs
    group: str  # the resource group key
    runs: list[RunSpec]
    after_job: str | None  # ``JOB_OF_T-seed1`` for a source submitted now, a job id for one queued before


def placeholder(run_name: str) -> str:
    """Stands for the job id of run ``run_name``'s array task, known once it is submitted; like a job id
    (``123_4``) it needs no shell quoting, so the script differs from the submitted one in that word only."""
    return f"JOB_OF_{run_name}"


def arrays(new: list[RunSpec], manifest: Manifest, experiment: Experiment, max_array: int,
           kind: str) -> Iterator[Array]:
    """The arrays of ``new`` in submit order, as submit_chain makes them (every source's submission
    succeeding). Only SLURM's jobs have ids at submit: the local queue orders a chain itself, in one array."""
    submitted = {spec.run_id: placeholder(spec.run_name) for spec in new} if kind == "slurm" else {}
    for wave, runs in enumerate(chain.waves(new), start=1):
        jobs = {spec.run_id: chain.source_job(spec, submitted, manifest, experiment) for spec in runs}
        for after, waiting in chain.by_source(runs, jobs):
            for key, chunk in split_groups(group_runs(waiting), max_array):
                yield Array(wave, key, chunk, after)


def alike(all_arrays: list[Array]) -> list[tuple[Array, list[Array]]]:
    """Each array with a source job shown once for its (wave, resource group): the first, and the others
    that differ from it only in their runs and the source job they wait for."""
    firsts: dict[tuple[int, str], tuple[Array, list[Array]]] = {}
    shown: list[tuple[Array, list[Array]]] = []
    for array in all_arrays:
        key = (array.wave, array.group)
        if array.after_job is not None and key in firsts:
            firsts[key][1].append(array)
            continue
        entry: tuple[Array, list[Array]] = (array, [])
        shown.append(entry)
        if array.after_job is not None:
            firsts[key] = entry
    return shown


def column(specs: list[RunSpec], waiting: set[str]) -> dict[str, str]:
    """run id -> ``wave 2 after T-seed1 (init_from)`` and/or ``waits for a slot``; empty when no run has a
    source and none waits (the table then keeps its columns)."""
    if not waiting and all(spec.source is None for spec in specs):
        return {}
    depth = {spec.run_id: wave for wave, runs in enumerate(chain.waves(specs), start=1) for spec in runs}
    cells = {}
    for spec in specs:
        ref = spec.source
        cell = f"wave {depth[spec.run_id]}" + (f" after {ref.run_name} ({ref.key})" if ref is not None else "")
        cells[spec.run_id] = cell + (", waits for a slot" if spec.run_id in waiting else "")
    return cells


def chain_lines(specs: list[RunSpec], kind: str) -> list[str]:
    """One line per source configuration -> dependent configuration: how many runs, and how they wait."""
    pairs: dict[tuple[str, str, str], list[RunSpec]] = {}
    base_of = {spec.run_id: spec.base_name for spec in specs}
    for spec in specs:
        ref = spec.source
        if ref is not None:
            what = f"init_from, take {ref.take}" if ref.key == "init_from" else "data.select_from"
            pairs.setdefault((base_of.get(ref.run_id, ref.run_name), spec.base_name, what), []).append(spec)
    how = ("each submitted at once with --dependency=afterok:<its source's array task> and "
           "--kill-on-invalid-dep=yes" if kind == "slurm" else "each started once its source has its result")
    return [f"chain: {source} -> {dependent} ({what}): {len(runs)} run(s), {how}"
            for (source, dependent, what), runs in pairs.items()]


def cap_lines(matrix: Matrix, later: list[RunSpec], cap: str, free_slots: int | None) -> list[str]:
    """What a job cap does to this submit: the runs that wait for a slot and the feeder job that submits them."""
    if not later:
        return []
    counts: dict[str, int] = {}
    for spec in later:
        counts[spec.base_name] = counts.get(spec.base_name, 0) + 1
    which = ", ".join(f"{base} {count}" for base, count in list(counts.items())[:SHOWN])
    which += f" and {len(counts) - SHOWN} more configurations" if len(counts) > SHOWN else ""
    partition = matrix.profile.feeder_partition
    where = (f"partition {partition} (the profile's feeder_partition)" if partition else
             f"the first waiting run's partition ({later[0].resources.partition or 'the preamble default'}; "
             "set feeder_partition in the cluster profile for a CPU one)")
    if free_slots == 0:
        return [(f"job cap {cap}: no slot free, not even for a feeder job: {len(later)} run(s) ({which}) would "
                "wait; run `orchestrate submit` again when jobs have ended")]
    return [(f"job cap {cap}: {free_slots} slot(s) free: {len(later)} run(s) wait for a slot ({which}), fed in "
            f"matrix order (sources first) by a feeder job on {where}, --dependency=afterany on the arrays "
            "submitted now; it takes the last free slot")]
