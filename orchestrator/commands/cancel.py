"""``orchestrate cancel``: cancel an experiment's active jobs (all, or the named runs), one call a
backend (one scancel).

A run whose state is ``unknown`` (SLURM could not be asked, or answered a state we do not know) is
cancelled too: it may still be queued or running, and scancel of a job that has ended is no error. If
the scheduler cannot be reached, nothing is recorded and the command fails saying so; it never reports
"none were active" for runs it could not see."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.backends import registry
from orchestrator.backends.slurm.feeder import forget_waiting
from orchestrator.errors import EXIT_OK, UserError
from orchestrator.experiment import store
from orchestrator.experiment.manifest import Manifest
from orchestrator.experiment.store import Experiment
from orchestrator.matrix import matches, name_patterns


def cancel(experiment: Experiment, patterns: list[str]) -> list[str]:
    """Cancel the active jobs of the runs matching ``patterns`` (all if empty); return run names."""
    with experiment.locked():
        manifest = experiment.read_manifest()
        run_ids = _select(experiment, manifest, name_patterns(patterns))
        states, _ = registry.scheduler_states(manifest, run_ids)
        active = [r for r in run_ids if r in states and (states[r].active or states[r].state == "unknown")]
        # in registry order (SLURM first): a scheduler that cannot be reached fails the command before
        # anything is recorded as cancelled
        for name, attempts in registry.latest_attempts(manifest, active).items():
            registry.get(name).cancel(manifest, attempts)
        active += forget_waiting(manifest, run_ids)  # held back by a job cap: never submitted now
        experiment.write_manifest(manifest)
    return [manifest.run_name(r) for r in active]


def _select(experiment: Experiment, manifest: Manifest, patterns: list[str]) -> list[str]:
    """The current runs matching ``patterns`` by the rule ``submit --only`` uses."""
    current = manifest.current_runs
    if not patterns:
        return list(current.values())
    chosen = [run_id for name, run_id in current.items() if matches(name, _base_name(experiment, run_id, name), patterns)]
    if not chosen:
        raise UserError(f"no run matches {' '.join(patterns)}; runs are {', '.join(sorted(current))}")
    return chosen


def _base_name(experiment: Experiment, run_id: str, run_name: str) -> str:
    """The run's matrix entry, from its spec.json (a base name may itself contain '-')."""
    try:
        return experiment.run_dir(run_id).read_spec().base_name
    except (OSError, ValueError):
        return run_name  # no readable spec: the full name still matches


def run(args: argparse.Namespace, cwd: Path) -> int:
    patterns = list(args.runs)
    try:
        experiment = store.resolve(cwd, args.experiment)
    except UserError:
        if args.experiment is None:
            raise
        experiment = store.resolve(cwd, None)  # `orchestrate cancel A1`: A1 is a run of the last experiment
        patterns.insert(0, args.experiment)
    names = cancel(experiment, patterns)
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    print(f"cancelled {len(names)} run(s)" + (f": {shown}" if names else " (none were active)"))
    return EXIT_OK
