"""collect's transfer tables on the shipped CPU transfer study: the gain against the from-scratch baseline at the
same placement, and the Spearman correlation of the source adapter's rank with the gain, checked against inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import write_json

from jobs.contract import ADAPTER_ANALYSIS_FILE
from orchestrator.collect import collect
from orchestrator.collect.transfer import spearman
from orchestrator.matrix import load_matrix

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sst2_transfer_cpu.yaml"
PLACEMENTS = ("attn-qkv", "attn-full", "ffn-only", "all-linear")
F1 = {"sst2_lora": 0.0, "mrpc_scratch": 0.70}  # transfer F1 below: per placement
TRANSFER_F1 = {"attn-qkv": 0.75, "attn-full": 0.76, "ffn-only": 0.60, "all-linear": 0.78}
STABLE = {"attn-qkv": 2.0, "attn-full": 1.8, "ffn-only": 1.2, "all-linear": 2.5}


def _study(tmp_path: Path, placements: tuple[str, ...] = PLACEMENTS) -> Path:
    text = EXAMPLE.read_text().replace("root: ./scratch", f"root: {tmp_path}")
    text = text.replace("[attn-qkv, attn-full, ffn-only, all-linear]", f"[{', '.join(placements)}]")
    (tmp_path / "m.yaml").write_text(text)
    matrix = load_matrix(tmp_path / "m.yaml")
    for spec in matrix.runs:
        run_dir = matrix.experiment_dir / "runs" / spec.run_id
        run_dir.mkdir(parents=True)
        write_json(run_dir / "spec.json", spec.model_dump(mode="json"))
        placement = spec.grid_values["lora.placement"]
        f1 = TRANSFER_F1[placement] if spec.base_name == "mrpc_transfer" else F1[spec.base_name]
        write_json(run_dir / "result.json", {"run_id": spec.run_id, "config_hash": spec.config_hash,
                                             "metrics": {"f1": f1, "accuracy": 0.9}, "warnings": []})
        if spec.base_name == "sst2_lora":  # two modules: their mean is the source's rank
            modules = [{"module": "m", "layer": layer, "r": 4, "stable_rank": STABLE[placement] + delta,
                        "effective_rank": 3.0, "spectral_norm": 1.0, "frobenius_norm": 1.0}
                       for layer, delta in ((0, -0.1), (1, 0.1))]
            write_json(run_dir / ADAPTER_ANALYSIS_FILE, {"modules": modules})
    return matrix.experiment_dir


def test_transfer_gain_per_placement_and_rank_correlation(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = collect(_study(tmp_path), out)
    gains = pd.read_csv(out / "tables" / "transfer_gain.csv")
    assert sorted(gains["placement"]) == sorted(PLACEMENTS)
    for _, row in gains.iterrows():
        assert row["source"] == "sst2_lora" and row["take"] == "adapter" and row["trainable"] == "head"
        assert row["metric"] == "f1" and row["baseline_id"].startswith("mrpc_scratch")
        assert row["placement"] in row["baseline_id"]  # the scratch run at the same placement
        assert row["gain"] == pytest.approx(TRANSFER_F1[row["placement"]] - 0.70)
    ranks = pd.read_csv(out / "tables" / "transfer_rank_gain.csv").set_index("figure")
    expected = stats.spearmanr([STABLE[p] for p in PLACEMENTS], [TRANSFER_F1[p] - 0.70 for p in PLACEMENTS])
    assert ranks.at["stable_rank", "n"] == 4
    assert ranks.at["stable_rank", "spearman_rho"] == pytest.approx(expected.statistic)
    assert ranks.at["stable_rank", "ci_low"] < ranks.at["stable_rank", "spearman_rho"] < ranks.at["stable_rank", "ci_high"]
    assert pd.isna(ranks.at["effective_rank", "spearman_rho"])  # 3.0 everywhere
    assert ranks.at["effective_rank", "reason"] == "a variable is constant"
    assert not [line for line in report.problems if "transfer" in line]


def test_too_few_points_and_missing_baseline_are_named(tmp_path: Path) -> None:
    experiment = _study(tmp_path, ("attn-qkv", "ffn-only"))
    for run_dir in (experiment / "runs").iterdir():
        if run_dir.name.startswith("mrpc_scratch") and "ffn-only" in run_dir.name:
            (run_dir / "result.json").unlink()  # not finished: no baseline at ffn-only
    out = tmp_path / "out"
    report = collect(experiment, out)
    gains = pd.read_csv(out / "tables" / "transfer_gain.csv").set_index("placement")
    assert pd.isna(gains.at["ffn-only", "gain"]) and gains.at["attn-qkv", "gain"] == pytest.approx(0.05)
    assert any("transfer gain unmeasured: 0 from-scratch configurations of task mrpc" in line
               for line in report.problems), report.problems
    ranks = pd.read_csv(out / "tables" / "transfer_rank_gain.csv").set_index("figure")
    assert ranks.at["stable_rank", "n"] == 1 and ranks.at["stable_rank", "reason"] == "n=1 < 3 pairs"


def test_spearman_interval_needs_four_points() -> None:
    three = spearman(pd.Series([1.0, 2.0, 3.0]), pd.Series([0.1, 0.3, 0.2]))
    assert three["n"] == 3 and three["spearman_rho"] == pytest.approx(0.5) and three["reason"] == "no interval at n=3"


def test_transfer_vs_scratch_curves_pair_each_transfer_configuration_with_its_baseline(tmp_path: Path) -> None:
    """The early-epoch curves: each transfer configuration's validation F1 during training beside the
    from-scratch configuration at its placement (metrics.jsonl evaluation lines), mean over seeds."""
    from orchestrator.collect.curves import read_eval_curve
    from orchestrator.collect.transfer import transfer_curves_figure, transfer_pairs

    experiment = _study(tmp_path, ("attn-qkv", "ffn-only"))
    curves = {}
    for run_dir in (experiment / "runs").iterdir():
        if run_dir.name.startswith("mrpc_"):
            start = 0.6 if run_dir.name.startswith("mrpc_transfer") else 0.3  # transfer starts higher
            lines = [{"split": "validation", "step": step, "epoch": step / 10, "metrics": {"f1": start + step / 100}}
                     for step in (5, 10, 15)]
            (run_dir / "metrics.jsonl").write_text("".join(f"{json.dumps(line)}\n" for line in lines))
            curves[run_dir.name] = read_eval_curve(lines)
    out = tmp_path / "out"
    collect(experiment, out)
    assert (out / "plots" / "transfer_vs_scratch.png").is_file()

    runs = pd.read_csv(out / "runs.csv")
    pairs = transfer_pairs(runs.assign(current=True))
    assert len(pairs) == 2 and all(d.startswith("mrpc_transfer") and b.startswith("mrpc_scratch") and m == "f1"
                                   for d, b, m in pairs)
    assert all(d.split(" ", 1)[1] == b.split(" ", 1)[1] for d, b, _ in pairs)  # the same placement
    configs = runs.groupby("config_id")["run_id"].agg(list).rename("run_ids").to_frame()
    figure = transfer_curves_figure(configs, curves, pairs)
    assert figure is not None and len(figure.axes) == 2
    for ax in figure.axes:
        transfer, scratch = (line.get_ydata() for line in ax.get_lines())
        assert list(transfer) == pytest.approx([0.65, 0.70, 0.75]) and list(scratch) == pytest.approx([0.35, 0.40, 0.45])
