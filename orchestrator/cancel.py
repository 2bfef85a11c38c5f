"""Cancel an experiment's active jobs (all, or the named runs): one scancel call.

A SLURM run whose state is ``unknown`` (SLURM could not be asked, or answered a state we do not know) is
cancelled too: it may still be queued or running, and scancel of a job that has ended is no error. If
scancel fails, nothing is recorded and the command fails saying so; it never reports "none were active"
for runs it could not see."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from orchestrator import slurm
from orchestrator.errors import RuntimeUserError, UserError
from orchestrator.jobstate import pid_alive, scheduler_states
from orchestrator.matrix import matches, name_patterns
from orchestrator.store import Experiment, latest_attempt


def cancel(experiment: Experiment, patterns: list[str]) -> list[str]:
    """Cancel the active jobs of the runs matching ``patterns`` (all if empty); return run names."""
    with experiment.locked():
        manifest = experiment.read_manifest()
        run_ids = _select(experiment, manifest, name_patterns(patterns))
        states, _ = scheduler_states(manifest, run_ids)
        active = [r for r in run_ids if r in states and (states[r].active or states[r].state == "unknown")]
        latest = {r: latest_attempt(manifest, r) or {} for r in active}
        slurm_ids = [str(latest[r]["job_id"]) for r in active if latest[r].get("executor") == "slurm"]
        if slurm_ids:
            try:
                slurm.scancel(slurm_ids)
            except (slurm.SlurmError, OSError) as exc:
                raise RuntimeUserError(
                    f"could not cancel {len(slurm_ids)} SLURM job(s) ({', '.join(slurm_ids[:5])}"
                    f"{' ...' if len(slurm_ids) > 5 else ''}): {exc}; nothing was cancelled. Run "
                    "`orchestrate cancel` again once slurmctld answers (`squeue` works)") from exc
        for run_id in active:
            attempt = latest_attempt(manifest, run_id) or {}
            if attempt.get("executor") == "local":
                _cancel_local(manifest, attempt)
        experiment.write_manifest(manifest)
    return [manifest["runs"][r]["run_name"] for r in active]


def _cancel_local(manifest: dict[str, Any], attempt: dict[str, Any]) -> None:
    if attempt.get("pid") and pid_alive(int(attempt["pid"])):
        # SIGINT is submitit's own cancel (LocalJob.cancel): the controller interrupts, then kills, its tasks
        os.kill(int(attempt["pid"]), signal.SIGINT)
    attempt["state"] = "cancelled"
    attempt["ended_at"] = time.time()


def _select(experiment: Experiment, manifest: dict[str, Any], patterns: list[str]) -> list[str]:
    """The current runs matching ``patterns`` by the rule ``submit --only`` uses."""
    current = manifest.get("current_runs", {})
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
