"""watch: polls until every run has ended, refreshing the tables, reporting progress."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import SEED_STUDY, build_seed_study, run_values, spec_dict, write_run

from orchestrator.collect import CollectReport, format_progress, watch

FORMATS = frozenset({"csv"})


def test_watch_until_every_run_has_ended(tmp_path: Path) -> None:
    study = build_seed_study(tmp_path)
    d1 = next(config for config in SEED_STUDY if config.base_name == "D1")
    baseline = study.run("A1", 1).run_id
    pending = [spec_dict("seed-study", d1, 4, baseline), spec_dict("seed-study", d1, 5, baseline)]
    reports: list[CollectReport] = []
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        # each poll, one more of the two unfinished runs finishes
        sleeps.append(seconds)
        spec = pending[len(sleeps) - 1]
        write_run(study.experiment_dir / "runs", spec, "completed", run_values(d1, spec["train"]["seed"]))

    final = watch(study.experiment_dir, tmp_path / "results", interval_s=7.0, formats=FORMATS,
                  progress=reports.append, sleep=sleep)
    assert sleeps == [7.0, 7.0]
    assert [(r.completed, r.running + r.pending) for r in reports] == [(42, 2), (43, 1), (44, 0)]
    assert final.all_ended and final is reports[-1]
    accuracy = pd.read_csv(tmp_path / "results" / "tables" / "accuracy_speed.csv").set_index("id")
    assert accuracy.loc["D1", "n"] == 4  # the tables were refreshed as runs finished


def test_watch_with_a_custom_check_and_a_timeout(tmp_path: Path) -> None:
    study = build_seed_study(tmp_path)
    calls: list[int] = []
    report = watch(study.experiment_dir, tmp_path / "results", formats=FORMATS,
                   is_finished=lambda r: r.completed >= 42, sleep=lambda s: calls.append(1))
    assert calls == [] and not report.all_ended  # the custom check (e.g. SLURM says all done) wins
    report = watch(study.experiment_dir, tmp_path / "results", formats=FORMATS, timeout_s=0.0,
                   sleep=lambda s: calls.append(1))
    assert calls == [] and report.running == 1


def test_progress_line(tmp_path: Path) -> None:
    report = CollectReport(experiment="x", experiment_dir=tmp_path, out_dir=tmp_path, runs_found=10, completed=6,
                           failed=1, running=2, pending=1, anomalies=("a",))
    line = format_progress(report, width=10)
    assert line == "[#######...] 7/10 ended (6 ok, 1 failed) 2 running 1 pending | 1 anomalies"
