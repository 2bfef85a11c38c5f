"""The typed manifest (orchestrator/experiment/manifest.py) reads every manifest.json written before it
existed, and writes it back unchanged: tests/unit/data/manifests/ holds ones written by the untyped code
(integration runs on the local cluster: a SLURM array, the local queue, an OOM-adapted retry, a
submission recovered after orchestrate was killed mid-submit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.experiment.manifest import Attempt, Manifest, Submission
from orchestrator.experiment.store import Experiment
from orchestrator.status import gather

GOLDEN = sorted((Path(__file__).parent / "data" / "manifests").glob("*.json"))


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_an_old_manifest_reads_typed_and_writes_back_unchanged(path: Path, tmp_path: Path) -> None:
    original = json.loads(path.read_text())
    manifest = Manifest.model_validate(original)
    assert manifest.to_json() == original
    for run_id, run in manifest.runs.items():
        assert manifest.latest_attempt(run_id) is run.attempts[-1]
        assert all(isinstance(a, Attempt) and a.executor in ("slurm", "local") for a in run.attempts)
    assert all(isinstance(s, Submission) and s.run_ids for s in manifest.submissions.values())
    experiment = Experiment(tmp_path / original["experiment"])
    experiment.path.mkdir()
    experiment.manifest_path.write_text(path.read_text())
    with experiment.locked():
        experiment.write_manifest(experiment.read_manifest())
    written = json.loads(experiment.manifest_path.read_text())
    assert written.pop("updated_at") >= original.pop("updated_at")
    assert written == original


def test_the_golden_manifests_cover_every_recorded_field() -> None:
    """What the untyped code wrote, key by key, is a declared field (none only survives as an extra)."""
    attempts, submissions = set(), set()
    for path in GOLDEN:
        data = json.loads(path.read_text())
        assert set(data) <= set(Manifest.model_fields), path
        attempts |= {key for run in data["runs"].values() for attempt in run["attempts"] for key in attempt}
        submissions |= {key for entry in data["submissions"].values() for key in entry}
    assert attempts <= set(Attempt.model_fields) and {"adapted", "pid", "gpus"} <= attempts
    assert submissions <= set(Submission.model_fields) and {"recovered", "runner_pid", "setup"} <= submissions


def test_status_reads_an_old_manifest(tmp_path: Path) -> None:
    """The local queue's manifest: both processes have ended and left no result, so status says failed."""
    experiment = Experiment(tmp_path / "localtest")
    experiment.path.mkdir()
    experiment.manifest_path.write_text((Path(__file__).parent / "data" / "manifests" / "local.json").read_text())
    rows, note = gather(experiment)
    assert [(r.run_name, r.state, r.job_id) for r in rows] == [("A1", "failed", "local-24039"),
                                                               ("A4", "failed", "local-24064")]
    assert note is None and "process ended without result.json" in rows[0].reason


def test_unknown_keys_survive_a_round_trip() -> None:
    """A newer orchestrate may add keys: this one keeps them when it rewrites the manifest."""
    data = {"experiment": "x", "future_key": [1], "runs": {"r-1": {"run_name": "r", "attempts": [
        {"job_id": "1", "executor": "slurm", "submitted_at": 1.0, "queue_priority": 3}]}}}
    assert Manifest.model_validate(data).to_json() == data


def test_a_new_manifest_has_the_keys_the_untyped_code_wrote() -> None:
    assert Manifest.empty("x").to_json() == {"schema_version": 1, "experiment": "x", "baseline": None,
                                             "current_runs": {}, "runs": {}, "submissions": {}}
