"""The forked helpers of a cold collect give the same result as doing it all in-process."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import build_seed_study

from orchestrator.collect import collect, plot_job, reader
from orchestrator.collect.parallel import ChildFailed, ForkedCall, can_fork

needs_fork = pytest.mark.skipif(not can_fork(), reason="needs the fork start method and two CPUs")


def _records(index: reader.Index) -> dict[str, str]:
    # repr: the NaN-loss run's NaN equals itself as text
    return {name: repr((record.status, record.columns, record.values, record.curve_losses, record.problems))
            for name, (_, record) in index.items()}


@needs_fork
def test_parallel_read_equals_serial_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = build_seed_study(tmp_path)
    runs_dir = study.experiment_dir / "runs"
    scanned = reader.scan(runs_dir)
    serial, count = reader.refresh(runs_dir, scanned, {})
    monkeypatch.setattr(reader, "PARALLEL_READ_MIN_RUNS", 1)
    monkeypatch.setattr(reader, "spare_cpu", lambda: True)
    # an earlier test in the same process may have left a helper thread alive, which makes
    # can_fork() say no at run time; the platform check is needs_fork's job
    monkeypatch.setattr(reader, "can_fork", lambda: True)
    calls: list[int] = []
    real_map = reader.map_forked
    monkeypatch.setattr(reader, "map_forked", lambda *args: calls.append(1) or real_map(*args))
    parallel, parallel_count = reader.refresh(runs_dir, scanned, {})
    assert count == parallel_count == 47 and calls == [1]
    assert _records(parallel) == _records(serial)


def test_serial_collect_equals_forked_collect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = build_seed_study(tmp_path)
    forked = collect(study.experiment_dir, tmp_path / "forked", formats=frozenset({"csv", "png"}))
    monkeypatch.setattr(plot_job, "can_fork", lambda: False)
    serial = collect(study.experiment_dir, tmp_path / "serial", formats=frozenset({"csv", "png"}))
    assert sorted(p.relative_to(tmp_path / "forked") for p in forked.written) == sorted(
        p.relative_to(tmp_path / "serial") for p in serial.written)
    for name in ("runs.csv", "tables/accuracy_speed.csv", "tables/recipes.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "forked" / name), pd.read_csv(tmp_path / "serial" / name))


def test_plots_fall_back_in_process_when_the_child_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenChild:
        def __init__(self, function: object) -> None:
            pass

        def result(self, timeout_s: float | None = None) -> object:
            raise ChildFailed("killed")

    monkeypatch.setattr(plot_job, "ForkedCall", BrokenChild)
    monkeypatch.setattr(plot_job, "can_fork", lambda: True)
    study = build_seed_study(tmp_path)
    report = collect(study.experiment_dir, tmp_path / "results", formats=frozenset({"png"}))
    assert {path.name for path in report.written} == {"pareto.png", "vram.png", "loss_curves.png", "lora_rank.png"}


def _raise() -> None:
    raise ValueError("boom")


def _sleep() -> None:
    time.sleep(30)


@needs_fork
def test_forked_call_reports_failure_death_and_timeout() -> None:
    assert ForkedCall(lambda: 41 + 1).result(timeout_s=30) == 42
    with pytest.raises(ChildFailed, match="ValueError: boom"):
        ForkedCall(_raise).result(timeout_s=30)
    with pytest.raises(ChildFailed, match="without a result"):
        ForkedCall(lambda: os._exit(3)).result(timeout_s=30)
    started = time.monotonic()
    with pytest.raises(ChildFailed, match="no result after"):
        ForkedCall(_sleep).result(timeout_s=0.5)
    assert time.monotonic() - started < 10
