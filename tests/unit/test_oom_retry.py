"""OOM-adaptive retry: the policy, the matrix option's validation, what --retry-failed plans, and
collect's column (the end-to-end test with a real OOM is tests/integration/test_oom_retry.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from jobs.contract import MicroBatching, OomAdaptation, RunDir, RunSpec, applied_train
from orchestrator.errors import MatrixError
from orchestrator.matrix import load_matrix
from orchestrator.oomretry import next_micro_batching, plan_retry, retry_of

MATRIX = """
experiment: oom
root: {root}
cluster: local
defaults:
  batch_size: 12
  oom_retry: {max_adaptations: 4}
runs:
  A1: {}
  B1: {oom_retry: null}
"""


def load(tmp_path: Path, text: str = MATRIX) -> dict[str, RunSpec]:
    path = tmp_path / "matrix.yaml"
    path.write_text(textwrap.dedent(text).replace("{root}", str(tmp_path / "scratch")))
    return {spec.run_name: spec for spec in load_matrix(path).runs}


def batching(batch_size: int, accumulation: int = 1, checkpointing: bool = False) -> MicroBatching:
    return MicroBatching(batch_size=batch_size, gradient_accumulation_steps=accumulation,
                         gradient_checkpointing=checkpointing)


OOM = {"reason": "cuda_oom", "message": "OutOfMemoryError: CUDA out of memory"}


def test_policy_keeps_the_effective_batch_then_turns_on_checkpointing() -> None:
    steps = [batching(12)]
    while (following := next_micro_batching(steps[-1])) is not None:
        steps.append(following)
    assert [(s.batch_size, s.gradient_accumulation_steps, s.gradient_checkpointing) for s in steps] == [
        (12, 1, False), (6, 2, False), (3, 4, False), (1, 12, False), (1, 12, True)]
    assert next_micro_batching(batching(8, 2)) == batching(4, 4)


def test_oom_retry_is_validated_with_the_key_and_left_out_of_the_config_hash(tmp_path: Path) -> None:
    specs = load(tmp_path)
    assert specs["A1"].config_hash == specs["B1"].config_hash  # the policy is not the configuration
    assert specs["A1"].train.oom_retry is not None and specs["A1"].train.oom_retry.max_adaptations == 4
    with pytest.raises(MatrixError) as info:
        load(tmp_path, MATRIX.replace("max_adaptations: 4", "max_adaptation: 0"))
    assert ("defaults.oom_retry.max_adaptation", "unknown key (did you mean 'max_adaptations'?)") in info.value.problems
    with pytest.raises(MatrixError) as info:
        load(tmp_path, MATRIX.replace("max_adaptations: 4", "max_adaptations: 0"))
    fix = "0: must be at least 1; to resubmit runs that ran out of memory unchanged, write oom_retry: null (the default)"
    assert info.value.problems == [("defaults.oom_retry.max_adaptations", fix)]


def test_an_adaptation_must_keep_the_effective_batch() -> None:
    with pytest.raises(ValidationError, match="changes the effective batch"):
        OomAdaptation.model_validate({"from": batching(8), "to": batching(4), "adaptations": 1})


def test_retry_after_oom_adapts_counts_and_stops_at_the_bound(tmp_path: Path) -> None:
    spec = load(tmp_path)["A1"]
    first = plan_retry(spec, spec, OOM)
    assert first.spec.adaptation is not None and first.spec.adaptation.adaptations == 1
    assert first.spec.adaptation.model_dump(mode="json")["from"] == {
        "batch_size": 12, "gradient_accumulation_steps": 1, "gradient_checkpointing": False}
    assert applied_train(first.spec).batch_size == 6 and applied_train(first.spec).gradient_accumulation_steps == 2
    assert first.spec.run_id == spec.run_id and first.spec.train == spec.train  # same run, same declared config
    assert first.note is not None and "12 x accumulation 1 -> batch_size 6 x accumulation 2" in first.note
    previous = first.spec
    for expected in ((3, 4, False), (1, 12, False), (1, 12, True)):
        previous = plan_retry(spec, previous, OOM).spec
        assert previous.adaptation is not None
        to = previous.adaptation.to
        assert (to.batch_size, to.gradient_accumulation_steps, to.gradient_checkpointing) == expected
    assert previous.adaptation is not None and previous.adaptation.adaptations == 4
    exhausted = plan_retry(spec, previous, OOM)
    assert exhausted.spec.adaptation == previous.adaptation
    assert exhausted.note is not None and "after 4 of oom_retry.max_adaptations 4" in exhausted.note


def test_other_failures_keep_the_adaptation_and_runs_without_the_option_are_unchanged(tmp_path: Path) -> None:
    specs = load(tmp_path)
    adapted = plan_retry(specs["A1"], specs["A1"], OOM).spec
    timeout = plan_retry(specs["A1"], adapted, {"reason": "timeout"})
    assert timeout.spec.adaptation == adapted.adaptation and "keeps its OOM adaptation" in str(timeout.note)
    plain = plan_retry(specs["B1"], specs["B1"], OOM)
    assert plain.spec.adaptation is None and "set oom_retry" in str(plain.note)
    assert plan_retry(specs["A1"], specs["A1"], {"reason": "exception"}) == plan_retry(specs["A1"], None, None)


def test_retry_reads_the_run_directory(tmp_path: Path) -> None:
    spec = load(tmp_path)["A1"]
    run_dir = RunDir(tmp_path / "run")
    assert retry_of(spec, run_dir).spec.adaptation is None  # nothing there yet
    run_dir.write_spec(spec)
    run_dir.write_failure("cuda_oom", "OutOfMemoryError: CUDA out of memory")
    retry = retry_of(spec, run_dir)
    assert retry.spec.adaptation is not None and retry.spec.adaptation.to.batch_size == 6
    run_dir.write_spec(retry.spec)  # what submit writes; it round-trips through spec.json
    assert run_dir.read_spec() == retry.spec


def _collect_row(run_dir: Path, name: str, adapted: dict[str, Any] | None) -> None:
    spec = {"run_id": name, "run_name": name, "base_name": "A1", "series": "A", "config_hash": "abc",
            "grid_values": {}, "train": {"batch_size": 4}, "resources": {}, "experiment": "e"}
    (run_dir / name).mkdir(parents=True)
    (run_dir / name / "spec.json").write_text(json.dumps(spec))
    (run_dir / name / "result.json").write_text(json.dumps({
        "run_id": name, "config_hash": "abc", "metrics": {"f1": 50.0}, "train": {"loss": 1.0, "runtime_s": 1.0},
        "warnings": [], "healthy": True, "adapted": adapted}))


def test_collect_names_adapted_runs_in_their_configuration_row(tmp_path: Path) -> None:
    from orchestrator import collect

    adapted = {"from": {"batch_size": 4, "gradient_accumulation_steps": 1, "gradient_checkpointing": False},
               "to": {"batch_size": 1, "gradient_accumulation_steps": 4, "gradient_checkpointing": True},
               "reason": "cuda_oom", "adaptations": 3}
    runs = tmp_path / "exp" / "runs"
    _collect_row(runs, "A1-seed1", adapted)
    _collect_row(runs, "A1-seed2", None)
    collect.collect(tmp_path / "exp", tmp_path / "out", formats=frozenset({"csv", "md"}))
    table = (tmp_path / "out" / "tables" / "configurations.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| A1")]
    assert len(rows) == 1 and "2" in [cell.strip() for cell in rows[0].split("|")] and "A1-seed1 (4x1 -> 1x4+ckpt)" in rows[0], table
    assert "A1-seed2" not in rows[0].split("|")[-2]


def test_dry_run_with_retry_failed_shows_the_adaptation_and_writes_nothing(tmp_path: Path) -> None:
    import io

    from orchestrator.dryrun import print_dry_run
    from orchestrator.experiment.manifest import Manifest
    from orchestrator.experiment.store import Experiment

    path = tmp_path / "matrix.yaml"
    path.write_text(textwrap.dedent(MATRIX).replace("{root}", str(tmp_path / "scratch")))
    matrix = load_matrix(path)
    experiment = Experiment(matrix.experiment_dir)
    manifest = Manifest.empty("oom").to_json()
    for spec in matrix.runs:  # both ran once, locally, and ended with CUDA out of memory
        manifest["runs"][spec.run_id] = {"run_name": spec.run_name, "attempts": [
            {"job_id": "local-1", "submission": "t", "submitted_at": 0.0, "executor": "local", "state": "ended"}]}
        run_dir = experiment.run_dir(spec.run_id)
        run_dir.write_spec(spec)
        run_dir.write_failure("cuda_oom", "OutOfMemoryError: CUDA out of memory")
    experiment.write_manifest(Manifest.model_validate(manifest))
    before = {p: p.read_bytes() for p in matrix.experiment_dir.rglob("*") if p.is_file()}
    out = io.StringIO()
    print_dry_run(matrix, list(matrix.runs), "local", out, retry_failed=True)
    text = out.getvalue()
    assert ("retry A1: failed with cuda_oom: adapted batch_size 12 x accumulation 1 -> batch_size 6 x accumulation 2 "
            "(adaptation 1 of 4; same effective batch)") in text, text
    assert "retry B1: failed with cuda_oom: resubmitted unchanged (set oom_retry" in text, text
    # the summary says what happens to them (it said "0 failed before" while resubmitting both)
    assert "already submitted: 0 done, 0 running or pending, 2 failed before, resubmitted (--retry-failed)" in text
    out = io.StringIO()
    print_dry_run(matrix, list(matrix.runs), "local", out)
    assert "2 failed before (resubmit with --retry-failed)" in out.getvalue(), out.getvalue()
    assert {p: p.read_bytes() for p in matrix.experiment_dir.rglob("*") if p.is_file()} == before


def test_an_oom_in_evaluation_does_not_shrink_the_training_micro_batch(tmp_path: Path) -> None:
    """Training had ended, so the resumed run goes straight to evaluation: halving the micro-batch would use
    up the adaptations on the same OOM. The worker records the phase; the retry says to lower eval_batch_size."""
    import torch

    from jobs.entrypoint import _write_failure

    spec = load(tmp_path)["A1"]
    run_dir = RunDir(tmp_path / "run")
    run_dir.write_heartbeat("evaluating", step=6)
    _write_failure(run_dir, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), {})
    failure = json.loads(run_dir.failure_path.read_text())
    assert failure["reason"] == "cuda_oom" and failure["during"] == "evaluating", failure
    retry = plan_retry(spec, spec, failure)
    assert retry.spec.adaptation is None
    assert retry.note is not None and "during evaluation" in retry.note and "eval_batch_size" in retry.note
    assert plan_retry(spec, spec, {**failure, "during": "training"}).spec.adaptation is not None


def test_a_submission_recovered_after_a_crash_records_its_adaptation(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """orchestrate killed after sbatch: the next submit finds the jobs by name and records the attempts from
    the spec.json written before sbatch (it crashed on the adaptation field of a stand-in spec)."""
    from orchestrator.backends.slurm import commands as slurm
    from orchestrator.experiment.manifest import Manifest
    from orchestrator.experiment.store import Experiment
    from orchestrator.submit import recover_interrupted

    spec = load(tmp_path)["A1"]
    adapted = plan_retry(spec, spec, OOM).spec
    experiment = Experiment(tmp_path / "scratch" / "oom")
    experiment.run_dir(adapted.run_id).write_spec(adapted)
    manifest = Manifest.empty("oom").to_json()
    manifest["submissions"]["t"] = {"token": "t", "state": "submitting", "executor": "slurm", "job_name": "orc.oom.t",
                                    "run_ids": [adapted.run_id, "B1-gone-12345678"]}
    monkeypatch.setattr(slurm, "jobs_by_name", lambda name: {0: "77_0", 1: "77_1"})
    experiment.path.mkdir(parents=True, exist_ok=True)
    record = Manifest.model_validate(manifest)
    recover_interrupted(experiment, record)
    manifest = record.to_json()
    assert manifest["submissions"]["t"]["state"] == "submitted"
    first, = manifest["runs"][adapted.run_id]["attempts"]
    assert first["job_id"] == "77_0" and first["adapted"]["to"]["batch_size"] == 6, first
    second, = manifest["runs"]["B1-gone-12345678"]["attempts"]  # no spec.json: recorded from the id alone
    assert second["job_id"] == "77_1" and "adapted" not in second
