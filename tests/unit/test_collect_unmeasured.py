"""A training figure a run could not measure is missing in collect's tables, never a 0x speed-up."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import SEED_STUDY, run_values, spec_dict, write_run

from orchestrator.collect import collect

# What an attempt that only evaluated made older workers write, and what the worker writes now.
OLD_EVAL_ONLY = {"runtime_s": 1e-09, "samples_per_s": 0.0, "steps_per_s": 0.0, "tokens_per_s": 0.0}
UNMEASURED = {"runtime_s": None, "samples_per_s": None, "steps_per_s": None, "tokens_per_s": None}


@pytest.mark.parametrize("train", [OLD_EVAL_ONLY, UNMEASURED], ids=["zero-from-an-older-worker", "null"])
def test_an_unmeasured_throughput_is_missing_not_a_zero_speed_up(tmp_path: Path, train: dict[str, Any]) -> None:
    experiment_dir = tmp_path / "study"
    baseline, other = SEED_STUDY[0], SEED_STUDY[2]  # A1 (eager), A3 (compile)
    baseline_id = spec_dict("study", baseline, 1, None)["run_id"]
    for config in (baseline, other):
        spec = spec_dict("study", config, 1, baseline_id)
        run_dir = write_run(experiment_dir / "runs", spec, "completed", run_values(config, 1))
        if config is other:
            import json

            result = json.loads((run_dir / "result.json").read_text())
            result["train"].update(train)
            (run_dir / "result.json").write_text(json.dumps(result))
    out_dir = tmp_path / "out"
    collect(experiment_dir, out_dir)
    speed = pd.read_csv(out_dir / "tables" / "accuracy_speed.csv", keep_default_na=False, na_values=[""]).set_index("id")
    assert speed.loc["A1", "speedup"] == pytest.approx(1.0)
    assert math.isnan(speed.loc["A3", "speedup"]), speed.loc["A3"].to_dict()
    runs = pd.read_csv(out_dir / "runs.csv")
    assert runs.set_index("base_name").loc["A3", "train_result.samples_per_s"] != 0
