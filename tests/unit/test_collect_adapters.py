"""collect's adapter_ranks table from the runs' adapter_analysis.json, checked against the inputs."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import build_seed_study

from jobs.contract import ADAPTER_ANALYSIS_FILE
from orchestrator.collect import collect


def _entry(layer: int, module: str, stable: float | None, effective: float | None, spectral: float) -> dict[str, Any]:
    return {"name": f"bert.encoder.layer.{layer}.{module}", "layer": layer, "module": module, "r": 4,
            "stable_rank": stable, "effective_rank": effective, "spectral_norm": spectral,
            "frobenius_norm": 2 * spectral}


def test_adapter_ranks_table_averages_current_finished_runs_over_seeds(tmp_path: Path) -> None:
    study = build_seed_study(tmp_path)
    lora4 = [run for run in study.runs if run.config.grid == {"lora.r": 4}]
    written: dict[int, tuple[float, float]] = {}
    for run in lora4:
        stable, effective = 1.0 + run.seed / 10, 2.0 + run.seed / 5
        modules = [_entry(0, "attention.self.query", stable, effective, float(run.seed)),
                   _entry(1, "attention.self.query", None, None, 0.0)]  # a zero update: no rank
        (study.experiment_dir / "runs" / run.run_id / ADAPTER_ANALYSIS_FILE).write_text(
            json.dumps({"kind": "lora", "modules": modules}))
        if run.current and run.status == "completed":
            written[run.seed] = (stable, effective)
    lora8 = next(run for run in study.runs if run.config.grid == {"lora.r": 8} and run.status == "completed")
    (study.experiment_dir / "runs" / lora8.run_id / ADAPTER_ANALYSIS_FILE).write_text('{"modules": [')
    out_dir = tmp_path / "out"
    report = collect(study.experiment_dir, out_dir)

    table = pd.read_csv(out_dir / "tables" / "adapter_ranks.csv")
    config_id = lora4[0].config.config_id
    assert set(table["id"]) == {config_id}  # the unreadable r=8 file is left out
    first = table[(table["layer"] == 0)].iloc[0]
    stables = [stable for stable, _ in written.values()]
    assert first["module"] == "attention.self.query" and first["n"] == len(written) >= 2
    assert first["stable_rank_mean"] == pytest.approx(statistics.mean(stables))
    assert first["stable_rank_std"] == pytest.approx(statistics.stdev(stables))
    assert first["effective_rank_mean"] == pytest.approx(statistics.mean(e for _, e in written.values()))
    zero = table[(table["layer"] == 1)].iloc[0]
    assert zero["stable_rank_n_ranked"] == 0 and pd.isna(zero["stable_rank_mean"])
    assert [line for line in report.problems if ADAPTER_ANALYSIS_FILE in line and lora8.run_id in line]
