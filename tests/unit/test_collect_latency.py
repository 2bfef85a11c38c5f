"""collect's latency columns in the accuracy/speed table: means over seeds of result.json latency_ms,
a figure not measured shown as not measured, and no columns at all when no run measured latency."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import build_sst2_study

from orchestrator.collect import collect

# config base name -> seed -> latency_ms (None: latency off)
LATENCY: dict[str, dict[int, Any]] = {
    "F1": {seed: {"batch_1": {"p50": 4.0 + seed, "p95": 6.0 + seed}, "batch_N": {"p50": 20.0 * seed, "p95": 30.0 * seed},
                  "batch_size": 32, "device": "cuda:0 (Tesla T4)", "batches": 50, "warmup": 5, "unmeasured": {}}
           for seed in (1, 2)},
    "Q1": {seed: {"batch_1": {"p50": 9.0, "p95": 12.0}, "batch_N": None, "batch_size": 64, "device": "cuda:0 (Tesla T4)",
                  "batches": 50, "warmup": 5,
                  "unmeasured": {"batch_N": "the evaluation set has 40 features, fewer than one batch of 64"}}
           for seed in (1, 2)},
}


def add_latency(experiment_dir: Path) -> None:
    for result_path in (experiment_dir / "runs").glob("*/result.json"):
        spec = json.loads((result_path.parent / "spec.json").read_text())
        latency = LATENCY.get(spec["base_name"], {}).get(spec["train"]["seed"])
        result = json.loads(result_path.read_text())
        result["latency_ms"] = latency
        result_path.write_text(json.dumps(result))


def collected(tmp_path: Path, with_latency: bool) -> tuple[pd.DataFrame, str]:
    experiment_dir = build_sst2_study(tmp_path)
    if with_latency:
        add_latency(experiment_dir)
    out = tmp_path / "results"
    report = collect(experiment_dir, out, formats=frozenset({"csv", "md"}))
    assert report.completed == 12 and not report.problems, report.problems
    data = pd.read_csv(out / "tables" / "accuracy_speed.csv").set_index("id")
    return data, (out / "tables" / "accuracy_speed.md").read_text()


def test_latency_columns_are_means_over_seeds_and_name_what_was_not_measured(tmp_path: Path) -> None:
    data, markdown = collected(tmp_path, with_latency=True)
    full = data.loc[next(i for i in data.index if i.startswith("F1"))]
    assert full["latency_1_p50_ms_mean"] == pytest.approx(5.5) and full["latency_1_p95_ms_mean"] == pytest.approx(7.5)
    assert full["latency_N_p50_ms_mean"] == pytest.approx(30.0) and full["latency_N_p95_ms_mean"] == pytest.approx(45.0)
    assert full["latency_batch_size"] == 32 and full["latency_device"] == "cuda:0 (Tesla T4)"
    qlora = data.loc[next(i for i in data.index if i.startswith("Q1"))]
    assert qlora["latency_1_p50_ms_mean"] == pytest.approx(9.0) and pd.isna(qlora["latency_N_p50_ms_mean"])
    lora = data.loc[next(i for i in data.index if i.startswith("L1"))]  # latency off
    assert pd.isna(lora["latency_1_p50_ms_mean"]) and pd.isna(lora["latency_batch_size"])

    header = next(line for line in markdown.splitlines() if "latency bs 1" in line)
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    rows = {cells[0]: dict(zip(columns, cells)) for line in markdown.splitlines() if line.startswith("|")
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]] if len(cells) == len(columns)}
    f1_row = next(row for key, row in rows.items() if key.startswith("F1"))
    assert f1_row["latency bs 1 (ms) p50 / p95"] == "5.50 / 7.50"
    assert f1_row["latency bs N (ms) p50 / p95"] == "30.00 / 45.00 (N=32)"
    q1_row = next(row for key, row in rows.items() if key.startswith("Q1"))
    assert q1_row["latency bs N (ms) p50 / p95"] == "–"
    assert "latency_ms.unmeasured says why" in markdown


def test_no_latency_columns_when_no_run_measured_latency(tmp_path: Path) -> None:
    data, markdown = collected(tmp_path, with_latency=False)
    assert not [column for column in data.columns if "latency" in column]
    assert "latency" not in markdown
