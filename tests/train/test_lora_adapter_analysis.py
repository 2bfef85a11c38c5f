"""A short tiny LoRA run writes adapter_analysis.json with one entry per wrapped module."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from jobs.contract import ADAPTER_ANALYSIS_FILE, TrainConfig
from jobs.trainer import run_training

pytestmark = pytest.mark.train


def test_lora_run_writes_adapter_analysis(tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any) -> None:
    train = tiny(lora={"r": 4, "alpha": 8, "target_modules": ["query", "value"]})
    run_dir = run_dir_for("lora-analysis")
    result = run_training(spec_for(train, "lora-analysis"), run_dir)
    assert not [warning for warning in result["warnings"] if "adapter analysis" in warning]
    analysis = json.loads((run_dir.path / ADAPTER_ANALYSIS_FILE).read_text())
    names = sorted(entry["name"] for entry in analysis["modules"])
    # the tiny BERT has 2 layers: query and value of each are wrapped
    assert names == sorted(f"bert.encoder.layer.{layer}.attention.self.{kind}"
                           for layer in (0, 1) for kind in ("query", "value"))
    for entry in analysis["modules"]:
        assert entry["r"] == 4 and entry["scaling"] == pytest.approx(2.0)
        assert len(entry["singular_values"]) == 4 and entry["spectral_norm"] > 0  # two steps moved B off zero
        assert 1.0 <= entry["stable_rank"] <= 4.0 and 1.0 <= entry["effective_rank"] <= 4.0
