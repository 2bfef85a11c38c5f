"""The run-directory contract: typed Heartbeat / Failure / Result, one RunOutcome for status and collect,
one health policy for the worker and collect.

tests/unit/data/rundir_v1/ holds run directories written by the worker's writers before the typed models
(jobs/contract.py as of commit b70bc56): they must still read, on both sides.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobs.contract import (
    FAILURE_REASONS,
    HEARTBEAT_STATES,
    RESULT_KEYS,
    Failure,
    Heartbeat,
    Resources,
    Result,
    RunDir,
    RunOutcome,
    RunSpec,
    TrainConfig,
    config_hash,
)
from jobs.contract.rundir import parse_run_file
from jobs.health import check_health
from orchestrator import status
from orchestrator.collect.anomalies import find_anomalies
from orchestrator.collect.parse import read_run
from orchestrator.collect.reader import RUN_FILES
from orchestrator.experiment.manifest import Manifest
from orchestrator.experiment.store import Experiment

V1 = Path(__file__).parent / "data" / "rundir_v1"


def spec(run_name: str, baseline: str | None = None, **train: Any) -> RunSpec:
    config = TrainConfig(task="sst2", **train)
    digest = config_hash(config)
    return RunSpec(experiment="exp", run_name=run_name, base_name=run_name.split("-")[0], run_id=f"{run_name}-{digest}",
                   series="S", config_hash=digest, baseline_run_id=baseline, train=config, resources=Resources())


def test_files_written_before_the_typed_models_still_read() -> None:
    completed, failed = RunDir(V1 / "completed"), RunDir(V1 / "failed")
    result = completed.read_result()
    assert result is not None and result.metrics["accuracy"] == 91.5 and result.healthy is True
    assert result.train["steps"] == 10 and result.job_id == "17_0" and result.warnings == []
    heartbeat = completed.read_heartbeat()
    assert heartbeat is not None and (heartbeat.state, heartbeat.step, heartbeat.pid) == ("done", 10, 4242)
    failure = failed.read_failure()
    assert failure is not None and (failure.reason, failure.during, failure.attempt) == ("cuda_oom", "evaluating", "1")
    assert failure.text() == "cuda_oom: OutOfMemoryError: CUDA out of memory (hint: smaller batch_size)"
    older = RunDir(V1 / "older").read_heartbeat()
    assert older is not None and (older.state, older.step, older.pid, older.job_id) == ("training", 3, None, None)
    assert RunDir(V1 / "older").read_failure() is None and RunDir(V1 / "older").read_result() is None


def test_a_file_that_does_not_match_reads_as_written_not_as_absent(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.result_path.write_text(json.dumps({"warnings": "one string", "train": [], "surprise": 1}))
    result = run_dir.read_result()
    assert result is not None and result.warnings == "one string" and result.model_extra == {"surprise": 1}
    run_dir.failure_path.write_text(json.dumps({"message": "no reason given"}))
    failure = run_dir.read_failure()
    assert failure is not None and failure.reason is None and failure.text() == "exception: no reason given"
    run_dir.heartbeat_path.write_text('{"state": "train')  # torn
    assert run_dir.read_heartbeat() is None


def test_writers_check_types_and_keep_non_finite_numbers(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    with pytest.raises(ValueError, match="unknown heartbeat state 'trianing'"):
        run_dir.write_heartbeat("trianing")
    with pytest.raises(ValueError, match="unknown failure reason 'oom'"):
        run_dir.write_failure("oom", "x")
    with pytest.raises(ValueError, match="step"):
        run_dir.write_heartbeat("training", step="three")
    with pytest.raises(ValueError, match="warnings"):
        run_dir.write_result({"warnings": [["nested"]]})
    assert not run_dir.heartbeat_path.exists() and not run_dir.result_path.exists()  # nothing half-done
    run_dir.write_result({"train": {"loss": float("nan")}, "warnings": ["training loss is nan"], "healthy": False})
    assert "NaN" in run_dir.result_path.read_text()  # never turned into null
    run_dir.write_heartbeat("training", step=1, last_loss=float("inf"), job_id="5", attempt="0")
    run_dir.write_heartbeat("evaluating", step=2)
    assert Heartbeat.model_validate_json(run_dir.heartbeat_path.read_text()).job_id == "5"  # identity carried


def test_models_name_the_contract_vocabulary() -> None:
    assert set(RESULT_KEYS) == set(Result.model_fields)
    assert HEARTBEAT_STATES[0] == "starting" and "failed" in HEARTBEAT_STATES
    assert "cuda_oom" in FAILURE_REASONS
    assert parse_run_file(Failure, {"reason": "timeout"}).reason == "timeout"
    assert str(RunOutcome.COMPLETED) == "completed" and RunOutcome.NOT_SUBMITTED == "not submitted"


def _experiment_from_v1(tmp_path: Path) -> tuple[Experiment, dict[str, str]]:
    """An experiment whose runs are copies of the v1 run directories, with a spec each."""
    experiment = Experiment(tmp_path / "exp")
    manifest: dict[str, Any] = {"experiment": "exp", "current_runs": {}, "runs": {}, "submissions": {}}
    ids = {}
    for name in ("completed", "failed", "timeout", "older"):
        run_spec = spec(f"{name.capitalize()}1-seed1")
        shutil.copytree(V1 / name, experiment.runs_dir / run_spec.run_id)
        RunDir(experiment.runs_dir / run_spec.run_id).write_spec(run_spec)
        manifest["current_runs"][run_spec.run_name] = run_spec.run_id
        manifest["runs"][run_spec.run_id] = {"run_name": run_spec.run_name, "attempts": []}
        ids[name] = run_spec.run_id
    experiment.write_manifest(Manifest.model_validate(manifest))
    return experiment, ids


def test_status_and_collect_use_one_outcome_vocabulary(tmp_path: Path) -> None:
    experiment, ids = _experiment_from_v1(tmp_path)
    rows = {row.run_id: row for row in status.gather(experiment)[0]}
    collected = {}
    for name, run_id in ids.items():
        present = frozenset(path.name for path in (experiment.runs_dir / run_id).iterdir() if path.name in RUN_FILES)
        collected[name] = read_run(experiment.runs_dir / run_id, present).status
    assert rows[ids["completed"]].state == collected["completed"] == RunOutcome.COMPLETED == "completed"
    assert rows[ids["failed"]].state == collected["failed"] == RunOutcome.FAILED
    assert rows[ids["failed"]].reason.startswith("cuda_oom: OutOfMemoryError")
    assert rows[ids["timeout"]].state == RunOutcome.TIMEOUT and collected["timeout"] == RunOutcome.FAILED
    assert collected["older"] == RunOutcome.RUNNING
    assert (rows[ids["completed"]].step, rows[ids["completed"]].node) == (10, "node1")


# (accuracy, baseline accuracy, eval section): the worker warns exactly when collect finds a collapse.
HEALTH_CASES = {
    "healthy": (91.0, 92.0, {"num_classes": 2, "predicted_classes": {"0": 40, "1": 60}}),
    "at chance": (51.5, None, {"num_classes": 2, "predicted_classes": {"0": 40, "1": 60}}),
    "just above chance": (52.5, None, {"num_classes": 2, "predicted_classes": {"0": 40, "1": 60}}),
    "half the baseline": (44.0, 90.0, {"num_classes": 3, "predicted_classes": {"0": 30, "1": 30, "2": 40}}),
    "just over half the baseline": (46.0, 90.0, {"num_classes": 3, "predicted_classes": {"0": 30, "1": 30, "2": 40}}),
}


@pytest.mark.parametrize("case", sorted(HEALTH_CASES))
def test_worker_warnings_and_collect_anomalies_apply_one_policy(tmp_path: Path, case: str) -> None:
    accuracy, baseline, evaluation = HEALTH_CASES[case]
    base = spec("B1-seed1")
    run = spec("R1-seed1", baseline=base.run_id if baseline is not None else None, learning_rate=1e-4)
    if baseline is not None:
        RunDir(tmp_path / base.run_id).write_result({"metrics": {"accuracy": baseline}})
    body = {"metrics": {"accuracy": accuracy}, "train": {"loss": 0.5, "steps": 10, "planned_steps": 10},
            "eval": evaluation}
    warned = bool(check_health(run, RunDir(tmp_path / run.run_id), body))
    runs = pd.DataFrame({"run_id": [run.run_id], "run_name": [run.run_name], "config_id": ["R1"],
                         "status": [RunOutcome.COMPLETED.value], "stale": [False], "in_matrix": [True],
                         "current": [True], "metrics.accuracy": [accuracy], "eval.num_classes": [evaluation["num_classes"]],
                         "train_result.steps": [10], "train_result.planned_steps": [10], "warnings": [""],
                         "healthy": [True], "train.health.min_f1_ratio_to_baseline": [0.5]})
    means = {"R1": baseline} if baseline is not None else {}
    flagged = any(a.kind == "collapse" for a in find_anomalies(runs, "accuracy", means, {"R1": "B1"}))
    assert warned == flagged == (case in ("at chance", "half the baseline"))



# SQuAD v2 (f1, HasAns_f1, baseline f1 and HasAns_f1 or None): both sides judge F1 and HasAns F1.
SQUAD_CASES = {
    "healthy": (75.0, 78.0, (77.0, 80.0)),
    "f1 collapsed (the bucketing bug: 77 -> 27)": (27.0, 29.0, (77.0, 80.0)),
    "answers nothing (F1 kept by the unanswerable half)": (50.0, 0.0, (77.0, 80.0)),
    "no baseline, answers nothing": (50.0, 0.0, None),
    "no baseline, healthy": (70.0, 72.0, None),
}


@pytest.mark.parametrize("case", sorted(SQUAD_CASES))
def test_worker_and_collect_judge_squad_v2_on_the_same_metrics(tmp_path: Path, case: str) -> None:
    f1, hasans, baseline = SQUAD_CASES[case]
    squad = TrainConfig(task="squad_v2")
    base = spec("B1-seed1").model_copy(update={"train": squad})
    run = spec("R1-seed1", baseline=base.run_id if baseline is not None else None).model_copy(update={"train": squad})
    if baseline is not None:
        RunDir(tmp_path / base.run_id).write_result({"metrics": {"f1": baseline[0], "HasAns_f1": baseline[1]}})
    body = {"metrics": {"f1": f1, "HasAns_f1": hasans}, "train": {"loss": 0.5, "steps": 10, "planned_steps": 10}}
    warned = bool(check_health(run, RunDir(tmp_path / run.run_id), body))
    runs = pd.DataFrame({"run_id": [run.run_id], "run_name": [run.run_name], "config_id": ["R1"],
                         "status": [RunOutcome.COMPLETED.value], "stale": [False], "in_matrix": [True],
                         "current": [True], "metrics.f1": [f1], "metrics.HasAns_f1": [hasans],
                         "train_result.steps": [10], "train_result.planned_steps": [10], "warnings": [""],
                         "healthy": [True], "train.health.min_f1_ratio_to_baseline": [0.5]})
    judged = {"f1": {"R1": baseline[0]}, "HasAns_f1": {"R1": baseline[1]}} if baseline is not None else {}
    means = judged.get("f1", {})
    flagged = any(a.kind == "collapse" for a in find_anomalies(runs, "f1", means, {"R1": "B1"}, judged or None))
    assert warned == flagged == ("healthy" not in case)
