"""Anomaly detection and partial or broken input: reported, never a crash."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import (
    SEED_STUDY,
    Study,
    build_seed_study,
    result_json,
    run_values,
    spec_dict,
    write_json,
    write_run,
)

from orchestrator.collect import CollectReport, collect
from orchestrator.collect.anomalies import find_anomalies

CSV_ONLY = frozenset({"csv", "md"})


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Study, CollectReport]:
    root = tmp_path_factory.mktemp("anomalies")
    study = build_seed_study(root)
    return study, collect(study.experiment_dir, root / "results", formats=CSV_ONLY)


def kinds(report: CollectReport, kind_word: str) -> set[str]:
    return {line.split(":", 1)[0] for line in report.anomalies if kind_word in line}


def test_collapsed_run_is_flagged_against_the_baseline(collected: tuple[Study, CollectReport]) -> None:
    study, report = collected
    collapsed = {run.run_id for run in study.runs if run.config.base_name == "A4-b"}
    assert kinds(report, "(collapse") == collapsed
    line = next(line for line in report.anomalies if line.startswith(study.run("A4-b", 2).run_id))
    assert "F1 26.87 is 35% of baseline A1's 76.67" in line


def test_nan_short_and_unhealthy_runs(collected: tuple[Study, CollectReport]) -> None:
    study, report = collected
    assert kinds(report, "NaN/inf loss") == {study.run("A2", 3).run_id}
    assert kinds(report, "planned steps") == {study.run("B3", 2).run_id}
    assert kinds(report, "unhealthy") == {study.run("C2", 2).run_id}


def test_stale_and_not_in_matrix_runs_are_flagged_and_left_out(collected: tuple[Study, CollectReport]) -> None:
    study, report = collected
    assert kinds(report, "stale") == {study.specials["stale"]}
    assert kinds(report, "not in the matrix") == {study.specials["not_in_matrix"]}
    accuracy = pd.read_csv(report.out_dir / "tables" / "accuracy_speed.csv").set_index("id")
    assert accuracy.loc["A3", "n"] == 3 and accuracy.loc["A3", "f1_mean"] > 70  # the stale F1 10.0 is not in
    assert "Z1" not in accuracy.index


def test_every_broken_input_is_a_problem(collected: tuple[Study, CollectReport]) -> None:
    study, report = collected
    problems = "\n".join(report.problems)
    assert f"runs/{study.run('D1', 3).run_id}: corrupt result.json" in problems
    assert f"runs/{study.run('A1', 2).run_id}: unknown field(s) in result.json: surprise" in problems
    assert "runs/orphan: no spec.json" in problems
    assert "D2-seed1: missing run directory runs/D2-seed1-00000000" in problems
    assert len(report.problems) == 4


def test_odd_files_never_crash(tmp_path: Path) -> None:
    runs_dir = tmp_path / "odd" / "runs"
    config = SEED_STUDY[0]
    specs = [spec_dict("odd", config, seed, None) for seed in range(1, 8)]
    for spec in specs[:5]:
        write_run(runs_dir, spec, "completed", run_values(config, spec["train"]["seed"]))
    write_json(runs_dir / specs[0]["run_id"] / "result.json", ["not", "an", "object"])
    result = result_json(specs[1]["run_id"], specs[1]["config_hash"], run_values(config, 2)) | {"metrics": "oops"}
    write_json(runs_dir / specs[1]["run_id"] / "result.json", result)
    with open(runs_dir / specs[2]["run_id"] / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 999, "loss": 0.')  # torn last line
    write_json(runs_dir / specs[3]["run_id"] / "spec.json", specs[3] | {"new_knob": 1, "train": "??"})
    (runs_dir / specs[4]["run_id"] / "env.json").write_bytes(b"\xff\xfe")
    (runs_dir / "empty").mkdir()
    (runs_dir / "not-a-dir.txt").write_text("hello")
    write_run(runs_dir, specs[5], "running", None)
    write_run(runs_dir, specs[6], "running", None)  # killed: its heartbeat says failed, no failure.json
    write_json(runs_dir / specs[6]["run_id"] / "heartbeat.json", {"state": "failed"})
    report = collect(tmp_path / "odd", tmp_path / "results", formats=CSV_ONLY)
    problems = "\n".join(report.problems)
    assert "corrupt result.json (not a JSON object)" in problems
    assert "result.json metrics is not an object" in problems
    assert "unknown field(s) in spec.json: new_knob" in problems and "spec.json has no train section" in problems
    assert "corrupt env.json" in problems and "runs/empty: no spec.json" in problems
    assert (report.runs_found, report.completed, report.corrupt, report.running, report.failed) == (7, 4, 1, 1, 1)
    curve_run = pd.read_csv(tmp_path / "results" / "runs.csv").set_index("run_id").loc[specs[2]["run_id"]]
    assert curve_run["log.loss_points"] == 10  # the torn line is skipped, the rest kept


def test_no_manifest_uses_spec_baselines_and_newest_duplicate(tmp_path: Path) -> None:
    study = build_seed_study(tmp_path, write_manifest=False)
    stale_spec = study.experiment_dir / "runs" / study.specials["stale"] / "spec.json"
    os.utime(stale_spec, ns=(1, 1))  # the old A3-seed1 directory is the older one
    report = collect(study.experiment_dir, tmp_path / "results", formats=CSV_ONLY)
    assert any("A3-seed1: several run directories and no manifest.json; using the newest" in p
               for p in report.problems)
    assert kinds(report, "(collapse") == {run.run_id for run in study.runs if run.config.base_name == "A4-b"}
    accuracy = pd.read_csv(tmp_path / "results" / "tables" / "accuracy_speed.csv").set_index("id")
    assert set(accuracy["baseline_id"].dropna()) == {"A1"}  # from each spec's baseline_run_id
    assert "Z1" in accuracy.index  # without a manifest nothing is "not in the matrix"


def frame(**columns: object) -> pd.DataFrame:
    base = {"run_id": ["r1"], "run_name": ["X1-seed1"], "config_id": ["X1"], "status": ["completed"],
            "current": [True], "stale": [False], "in_matrix": [True], "warnings": [""], "healthy": [True]}
    return pd.DataFrame(base | {name: [value] for name, value in columns.items()})


@pytest.mark.parametrize(("f1", "ratio", "collapsed"), [(30.0, None, True), (40.0, None, False),
                                                        (40.0, 0.6, True), (76.0, 0.99, False)])
def test_collapse_threshold_is_the_health_ratio(f1: float, ratio: float | None, collapsed: bool) -> None:
    columns: dict[str, object] = {"metrics.f1": f1}
    if ratio is not None:
        columns["train.health.min_f1_ratio_to_baseline"] = ratio
    found = find_anomalies(frame(**columns), "f1", {"X1": 76.62}, {"X1": "A1"})
    assert [a.kind for a in found] == (["collapse"] if collapsed else [])


def test_hasans_floor_without_baseline() -> None:
    found = find_anomalies(frame(**{"metrics.f1": 40.0, "metrics.HasAns_f1": 0.2}), "f1", {}, {})
    assert [a.kind for a in found] == ["collapse"] and "HasAns F1 0.20 under the floor 1" in found[0].message


def test_manifest_that_is_not_json_is_a_problem(tmp_path: Path) -> None:
    study = build_seed_study(tmp_path, write_manifest=False)
    (study.experiment_dir / "manifest.json").write_text("{broken")
    report = collect(study.experiment_dir, tmp_path / "results", formats=CSV_ONLY)
    assert any(problem.startswith("manifest.json: unreadable") for problem in report.problems)
    assert report.completed == 42


def test_missing_runs_directory_and_missing_experiment(tmp_path: Path) -> None:
    (tmp_path / "empty-exp").mkdir()
    report = collect(tmp_path / "empty-exp", tmp_path / "results")
    assert report.runs_found == 0 and any("runs/: no such directory" in p for p in report.problems)
    assert (tmp_path / "results" / "summary.md").exists()
    from orchestrator.errors import UserError

    with pytest.raises(UserError, match="no experiment directory"):
        collect(tmp_path / "nope", tmp_path / "results")
    with pytest.raises(UserError, match="unknown format"):
        collect(tmp_path / "empty-exp", tmp_path / "results", formats=frozenset({"xlsx"}))


def test_result_json_is_read_as_data_only(tmp_path: Path) -> None:
    """A result with a hostile-looking string is a string in the table, nothing more."""
    config = SEED_STUDY[0]
    spec = spec_dict("data", config, 1, None)
    write_run(tmp_path / "data" / "runs", spec, "completed", run_values(config, 1),
              {"node": "__import__('os').system('false')"})
    collect(tmp_path / "data", tmp_path / "results", formats=CSV_ONLY)
    runs = pd.read_csv(tmp_path / "results" / "runs.csv")
    assert runs.loc[0, "node"] == "__import__('os').system('false')"
    assert json.loads((tmp_path / "data" / "runs" / spec["run_id"] / "result.json").read_text())["node"]


def test_accuracy_study_without_baseline(tmp_path: Path) -> None:
    """Study 2's shape: accuracy (a fraction), no F1, no baseline, a LoRA rank sweep."""
    from collect_fixtures import build_sst2_study

    report = collect(build_sst2_study(tmp_path), tmp_path / "results", formats=frozenset({"csv", "md", "png"}))
    assert (report.completed, report.anomalies) == (12, ())
    accuracy = pd.read_csv(tmp_path / "results" / "tables" / "accuracy_speed.csv").set_index("id")
    assert "f1_mean" not in accuracy and "exact_mean" not in accuracy
    assert accuracy.loc["F1", "accuracy_mean"] == pytest.approx(0.9196)
    recipes = pd.read_csv(tmp_path / "results" / "tables" / "recipes.csv").set_index("recipe")
    # no baseline: the best configuration is the reference; 0.5 points of a fraction is 0.005
    assert recipes.loc["fastest", "id"] == "F1"
    assert recipes.loc["leanest", "id"] == "L1 (r=32)"  # 0.9030 is within 0.02 of 0.9196; QLoRA's 0.8829 is not
    assert (tmp_path / "results" / "plots" / "lora_rank.png").exists()
    words = pd.read_csv(tmp_path / "results" / "tables" / "configurations.csv").set_index("id")
    assert "QLoRA r=32 on query/value (4-bit NF4, fp16 compute)" in words.loc["Q1 (r=32)", "configuration"]


def test_a_run_stopped_early_by_design_is_not_a_short_run() -> None:
    row = {"run_id": "r", "run_name": "r", "config_id": "c", "status": "completed", "stale": False,
           "in_matrix": True, "current": True, "train_result.steps": 60.0, "train_result.planned_steps": 80.0,
           "metrics.accuracy": 90.0}
    runs = pd.DataFrame([row, {**row, "run_id": "s"}])
    runs["early_stopping.stopped_early"] = [False, True]  # a bool column, as collect's frame holds it
    found = find_anomalies(runs, "accuracy", {}, {})
    assert [(a.kind, a.run_id) for a in found] == [("short_run", "r")]  # cut short: flagged; stopped early: not


def test_squad_judged_on_f1_and_hasans_f1_reads_each_column_once() -> None:
    # HasAns F1 is both a column the checks always read and one the health policy judges: asked for
    # twice, pandas warned "DataFrame columns are not unique" in every SQuAD collect
    runs = frame(**{"metrics.f1": 30.0, "metrics.HasAns_f1": 20.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = find_anomalies(runs, "f1", {"X1": 76.62}, {"X1": "A1"},
                               {"f1": {"X1": 76.62}, "HasAns_f1": {"X1": 70.0}})
    assert "collapse" in [a.kind for a in found]
