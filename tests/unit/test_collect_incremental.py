"""Incremental re-collect: the index re-reads exactly the runs that changed."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import SEED_STUDY, Study, build_seed_study, run_values, spec_dict, write_run

from orchestrator.collect import collect
from orchestrator.collect.reader import INDEX_FILE

FORMATS = frozenset({"csv", "md"})
RUN_DIRS = 47  # 46 runs and the directory without spec.json


@pytest.fixture()
def study(tmp_path: Path) -> Study:
    return build_seed_study(tmp_path)


def out(study: Study) -> Path:
    return study.experiment_dir.parent / "results"


def bump(path: Path) -> None:
    """Touch: a newer mtime, same content."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_second_collect_reads_nothing_and_writes_nothing(study: Study) -> None:
    first = collect(study.experiment_dir, out(study), formats=FORMATS)
    assert (first.runs_read, first.unchanged) == (RUN_DIRS, False)
    assert (study.experiment_dir / INDEX_FILE).is_file()
    mtimes = {path: path.stat().st_mtime_ns for path in first.written}
    second = collect(study.experiment_dir, out(study), formats=FORMATS)
    assert (second.runs_read, second.unchanged) == (0, True)
    assert {path: path.stat().st_mtime_ns for path in second.written} == mtimes
    assert (second.completed, second.problems, second.anomalies, second.summary_markdown) == (
        first.completed, first.problems, first.anomalies, first.summary_markdown)


@pytest.mark.parametrize("file_name", ["result.json", "metrics.jsonl", "spec.json", "heartbeat.json", "env.json"])
def test_touching_one_file_rereads_exactly_one_run(study: Study, file_name: str) -> None:
    collect(study.experiment_dir, out(study), formats=FORMATS)
    bump(study.experiment_dir / "runs" / study.run("B2", 1).run_id / file_name)
    report = collect(study.experiment_dir, out(study), formats=FORMATS)
    assert (report.runs_read, report.unchanged) == (1, False)
    assert collect(study.experiment_dir, out(study), formats=FORMATS).runs_read == 0


def test_a_run_that_finishes_is_picked_up(study: Study) -> None:
    before = collect(study.experiment_dir, out(study), formats=FORMATS)
    config = next(c for c in SEED_STUDY if c.base_name == "D1")
    spec = spec_dict("seed-study", config, 4, study.run("A1", 1).run_id)
    write_run(study.experiment_dir / "runs", spec, "completed", run_values(config, 4))
    after = collect(study.experiment_dir, out(study), formats=FORMATS)
    assert after.runs_read == 1
    assert (after.completed, after.running) == (before.completed + 1, before.running - 1)
    accuracy = pd.read_csv(out(study) / "tables" / "accuracy_speed.csv").set_index("id")
    assert accuracy.loc["D1", "n"] == 3


def test_new_and_removed_run_directories(study: Study) -> None:
    collect(study.experiment_dir, out(study), formats=FORMATS)
    config = SEED_STUDY[0]
    write_run(study.experiment_dir / "runs", spec_dict("seed-study", config, 9, None), "pending", None)
    added = collect(study.experiment_dir, out(study), formats=FORMATS)
    assert (added.runs_read, added.pending) == (1, 2)
    shutil.rmtree(study.experiment_dir / "runs" / study.run("A1", 3).run_id)
    removed = collect(study.experiment_dir, out(study), formats=FORMATS)
    assert (removed.runs_read, removed.unchanged, removed.runs_found) == (0, False, added.runs_found - 1)
    assert any("A1-seed3: missing run directory" in problem for problem in removed.problems)


def test_other_formats_rewrite_without_rereading(study: Study) -> None:
    collect(study.experiment_dir, out(study), formats=FORMATS)
    report = collect(study.experiment_dir, out(study), formats=frozenset({"tex"}))
    assert (report.runs_read, report.unchanged) == (0, False)
    assert {path.suffix for path in report.written} == {".tex"}
    # outputs of the earlier formats are not this collect's any more: removed, never half-stale
    assert not (out(study) / "runs.csv").exists() and (out(study) / "tables" / "vram.tex").exists()


def test_manifest_change_is_seen(study: Study) -> None:
    collect(study.experiment_dir, out(study), formats=FORMATS)
    manifest = study.experiment_dir / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"baseline": "A1"', '"baseline": "A3"'))
    report = collect(study.experiment_dir, out(study), formats=FORMATS)
    assert (report.runs_read, report.unchanged) == (0, False)
    assert "Baseline: A3." in report.summary_markdown


def test_corrupt_index_means_reading_everything_again(study: Study) -> None:
    collect(study.experiment_dir, out(study), formats=FORMATS)
    (study.experiment_dir / INDEX_FILE).write_bytes(b"not a pickle")
    bump(study.experiment_dir / "runs" / study.run("A1", 1).run_id / "result.json")
    report = collect(study.experiment_dir, out(study), formats=FORMATS)
    assert report.runs_read == RUN_DIRS and report.completed == 42


def test_deleted_output_is_rewritten(study: Study) -> None:
    collect(study.experiment_dir, out(study), formats=FORMATS)
    (out(study) / "summary.md").unlink()
    report = collect(study.experiment_dir, out(study), formats=FORMATS)
    assert not report.unchanged and (out(study) / "summary.md").exists()


def test_series_that_leaves_removes_its_table(study: Study) -> None:
    collect(study.experiment_dir, out(study), formats=FORMATS)
    assert (out(study) / "tables" / "accuracy_speed_D.csv").exists()
    for run in study.runs:
        if run.config.base_name == "D1":
            shutil.rmtree(study.experiment_dir / "runs" / run.run_id)
    collect(study.experiment_dir, out(study), formats=FORMATS)
    assert not (out(study) / "tables" / "accuracy_speed_D.csv").exists()
    assert (out(study) / "tables" / "accuracy_speed_C.csv").exists()
