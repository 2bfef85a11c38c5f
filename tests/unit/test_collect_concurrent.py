"""Two collects at once (two processes) leave a complete, consistent result."""

from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import build_seed_study

FORMATS = frozenset({"csv", "parquet", "md", "tex", "png"})


def _collect_in_child(experiment_dir: str, out_dir: str, barrier, queue) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.collect import collect

    barrier.wait(timeout=60)
    report = collect(Path(experiment_dir), Path(out_dir), formats=FORMATS)
    queue.put((report.runs_found, report.completed, report.anomalies, report.problems, report.unchanged))


def test_two_collects_at_once(tmp_path: Path) -> None:
    study = build_seed_study(tmp_path)
    out_dir = tmp_path / "results"
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(3), context.Queue()
    children = [context.Process(target=_collect_in_child, args=(str(study.experiment_dir), str(out_dir), barrier,
                                                                  queue)) for _ in range(2)]
    for child in children:
        child.start()
    barrier.wait(timeout=60)
    seen = _read_while_running(out_dir, children)
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    results = [queue.get(timeout=10) for _ in children]
    assert results[0][:4] == results[1][:4]  # same counts, anomalies and problems
    assert sorted(result[4] for result in results) == [False, True]  # the second found the first's work
    runs = pd.read_csv(out_dir / "runs.csv")
    assert len(runs) == len(pd.read_parquet(out_dir / "runs.parquet")) == 46
    for csv_path in (out_dir / "tables").glob("*.csv"):
        assert len(pd.read_csv(csv_path)) > 0, csv_path.name
    assert (out_dir / "summary.md").read_text().startswith("# Results: seed-study")
    assert not list(out_dir.rglob(".*.tmp"))
    assert all(rows == 46 for rows in seen)  # a reader never saw a half-written runs.csv


def _read_while_running(out_dir: Path, children: list) -> list[int]:  # type: ignore[type-arg]
    """Read runs.csv over and over while the collects run: it is either absent or whole."""
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while any(child.is_alive() for child in children) and time.monotonic() < deadline:
        try:
            seen.append(len(pd.read_csv(out_dir / "runs.csv")))
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    return seen
