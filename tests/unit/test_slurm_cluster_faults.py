"""The SLURM backend's answer when the controller is down or a node failed (SLURM's commands faked here;
the real faults are in tests/integration/test_cluster_faults.py)."""

from __future__ import annotations

import pytest

from orchestrator.backends.slurm import backend
from orchestrator.backends.slurm import commands as slurm
from orchestrator.backends.slurm.parse import JobState
from orchestrator.experiment.manifest import Attempt, Manifest


def job(job_id: str, state: str, node: str | None = None, reason: str | None = None) -> JobState:
    return JobState(job_id=job_id, state=state, raw_state=state.upper(), exit_code=None, elapsed_s=5, node=node,
                    start=None, end=None, reason=reason)


def test_controller_down_makes_accounting_s_queued_and_running_jobs_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    sacct = {"1": job("1", "running", "vm"), "2": job("2", "completed", "vm")}
    monkeypatch.setattr(slurm, "sacct_states", lambda ids: sacct)
    monkeypatch.setattr(slurm, "ping_controller", lambda: (_ for _ in ()).throw(slurm.SlurmError(["scontrol"], 1, "DOWN")))
    monkeypatch.setattr(slurm, "squeue_states", lambda ids: pytest.fail("squeue asked with slurmctld down"))
    states, note, unreachable = backend._query(["1", "2"], ["1", "2"])
    assert unreachable and "DOWN" in unreachable and note and note.startswith("slurmctld unreachable")
    assert states["1"].state == "unknown" and "accounting last recorded RUNNING" in states["1"].reason
    assert states["2"].state == "completed"  # an ended record is final


def test_a_job_accounting_has_not_recorded_with_the_controller_down_names_the_controller(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # seen in a loaded CI rehearsal: slurmctld stopped a moment after sbatch, before slurmdbd recorded the job
    monkeypatch.setattr(slurm, "sacct_states", lambda ids: {})
    monkeypatch.setattr(slurm, "ping_controller", lambda: (_ for _ in ()).throw(slurm.SlurmError(["scontrol"], 1, "DOWN")))
    monkeypatch.setattr(slurm, "squeue_states", lambda ids: pytest.fail("squeue asked with slurmctld down"))
    manifest = Manifest()
    attempts = {"run-a": Attempt(job_id="7", submitted_at=0.0)}
    states, note = backend.SlurmBackend().states(manifest, attempts)
    assert states["run-a"].state == "unknown", states
    assert "slurmctld could not be asked" in states["run-a"].reason and "DOWN" in states["run-a"].reason
    assert note and note.startswith("slurmctld unreachable")


def test_a_node_failure_carries_the_node_s_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    sacct = {"1": job("1", "node_fail", "vm"), "2": job("2", "pending", None, "ReqNodeNotAvail, UnavailableNodes:vm"),
             "3": job("3", "pending", None, "Priority")}
    monkeypatch.setattr(slurm, "sacct_states", lambda ids: sacct)
    monkeypatch.setattr(slurm, "ping_controller", lambda: None)
    monkeypatch.setattr(slurm, "node_reasons", lambda: {"vm": "down: disk replaced"})
    states, _, _ = backend._query(["1", "2", "3"], ["1", "2", "3"])
    assert states["1"].reason == "node vm down: disk replaced"
    assert states["2"].reason.endswith("; node vm down: disk replaced") and states["3"].reason == "Priority"
