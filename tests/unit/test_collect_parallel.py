"""The forked helpers of a cold collect give the same result as doing it all in-process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import build_seed_study

from orchestrator.collect import collect, plot_job
from orchestrator.collect.parallel import ChildFailed, ForkedCall, ForkedMap, can_fork

needs_fork = pytest.mark.skipif(not can_fork(), reason="needs the fork start method and two CPUs")


FRESH = "ORCHESTRATE_TEST_IN_FRESH_INTERPRETER"


def in_fresh_interpreter(test_name: str) -> bool:
    """True inside the fresh interpreter; outside, run ``test_name`` there and check it passed. A test that
    forks must: earlier tests leave threads (and DataLoader workers) in this pytest process, and a child
    forked then can block forever on a lock one of them held."""
    if os.environ.get(FRESH):
        return True
    done = subprocess.run([sys.executable, "-m", "pytest", f"{__file__}::{test_name}", "-q", "-p", "no:cacheprovider"],
                          env={**os.environ, FRESH: "1"}, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return False


PARALLEL_READ_CHECK = """
import sys
from pathlib import Path
from collect_fixtures import build_seed_study
from orchestrator.collect import reader

def records(index):
    # repr: the NaN-loss run's NaN equals itself as text
    return {name: repr((record.status, record.columns, record.values, record.curve_losses, record.problems))
            for name, (_, record) in index.items()}

study = build_seed_study(Path(sys.argv[1]))
runs_dir = study.experiment_dir / "runs"
scanned = reader.scan(runs_dir)
serial, count = reader.refresh(runs_dir, scanned, {})
reader.PARALLEL_READ_MIN_RUNS = 1
reader.spare_cpu = lambda: True
calls = []
real_map = reader.ForkedMap
reader.ForkedMap = lambda *args: calls.append(1) or real_map(*args)
assert reader.can_fork(), "a fresh interpreter has one thread"
parallel, parallel_count = reader.refresh(runs_dir, scanned, {})
assert count == parallel_count == 47 and calls == [1], (count, parallel_count, calls)
assert records(parallel) == records(serial)
print("parallel read equals serial read")
"""


@needs_fork
def test_parallel_read_equals_serial_read(tmp_path: Path) -> None:
    # In a fresh interpreter: this pytest process may hold threads an earlier test left
    # (forking then can leave a child blocked on a lock that thread held, which is why the
    # product forks only single-threaded), and the forked path is what is under test.
    tests_dir = Path(__file__).resolve().parent
    repo = tests_dir.parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir), str(repo)])}
    done = subprocess.run([sys.executable, "-c", PARALLEL_READ_CHECK, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "parallel read equals serial read" in done.stdout


def _die(_: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _block(_: object) -> None:
    threading.Event().wait()


@needs_fork
def test_forked_map_gives_up_on_a_dead_or_blocked_worker() -> None:
    if not in_fresh_interpreter("test_forked_map_gives_up_on_a_dead_or_blocked_worker"):
        return
    assert ForkedMap(abs, [-1, -2, 3, -4, 5], 2, timeout_s=60).results() == [1, 2, 3, 4, 5]
    for broken in (_die, _block):
        started = time.monotonic()
        assert ForkedMap(broken, [1, 2], 2, timeout_s=1.0).results() is None
        assert time.monotonic() - started < 30, broken.__name__


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
    if not in_fresh_interpreter("test_forked_call_reports_failure_death_and_timeout"):
        return
    assert ForkedCall(lambda: 41 + 1).result(timeout_s=30) == 42
    with pytest.raises(ChildFailed, match="ValueError: boom"):
        ForkedCall(_raise).result(timeout_s=30)
    with pytest.raises(ChildFailed, match="without a result"):
        ForkedCall(lambda: os._exit(3)).result(timeout_s=30)
    started = time.monotonic()
    with pytest.raises(ChildFailed, match="no result after"):
        ForkedCall(_sleep).result(timeout_s=0.5)
    assert time.monotonic() - started < 10
