"""collect's small pieces: statistics, Pareto fronts, rendering, words, imports."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from orchestrator.collect.describe import describe, method
from orchestrator.collect.flatten import flatten_into
from orchestrator.collect.render import Table, fmt_delta, fmt_mean_std, fmt_params, latex_escape
from orchestrator.collect.stats import aggregate, bootstrap_ci, pareto_front


def test_bootstrap_ci_follows_the_documented_recipe() -> None:
    values = [76.47, 76.62, 76.92, 76.70]
    indices = np.random.default_rng(0).integers(0, 4, size=(2000, 4))
    expected = np.percentile(np.asarray(values)[indices].mean(axis=1), [2.5, 97.5])
    assert bootstrap_ci(values) == (pytest.approx(expected[0]), pytest.approx(expected[1]))
    assert bootstrap_ci([1.0, 2.0, 3.0]) == bootstrap_ci([1.0, 2.0, 3.0])  # fixed seed: stable


def test_bootstrap_edge_cases() -> None:
    assert all(math.isnan(bound) for bound in bootstrap_ci([76.6]))  # n = 1: no spread
    assert all(math.isnan(bound) for bound in bootstrap_ci([]))
    assert bootstrap_ci([5.0, math.nan, 7.0]) == bootstrap_ci([5.0, 7.0])  # NaN left out


def test_ci_of_the_mean_is_a_t_interval_from_three_seeds() -> None:
    # issue 14: with n = 2 the old percentile bootstrap gave [min, max] and called it a 95% CI
    runs = pd.DataFrame({"config_id": ["two", "two", "three", "three", "three"],
                         "metrics.f1": [70.0, 72.0, 70.0, 71.0, 73.0]})
    stats = aggregate(runs, "config_id", {"f1": "metrics.f1"}, ci_metrics=("f1",))
    assert math.isnan(stats.loc["two", "f1_ci_low"]) and math.isnan(stats.loc["two", "f1_ci_high"])
    half = 4.302652729911275 * np.std([70.0, 71.0, 73.0], ddof=1) / math.sqrt(3)  # t(0.975, df=2)
    assert stats.loc["three", "f1_ci_low"] == pytest.approx(np.mean([70.0, 71.0, 73.0]) - half)
    assert stats.loc["three", "f1_ci_high"] == pytest.approx(np.mean([70.0, 71.0, 73.0]) + half)


def test_aggregate_mean_std_n() -> None:
    runs = pd.DataFrame({"config_id": ["a", "a", "a", "b"], "metrics.f1": [1.0, 2.0, np.inf, 5.0]})
    stats = aggregate(runs, "config_id", {"f1": "metrics.f1"}, ci_metrics=("f1",))
    assert stats.loc["a", "f1_mean"] == 1.5 and stats.loc["a", "f1_n"] == 2
    assert stats.loc["a", "f1_std"] == pytest.approx(np.std([1.0, 2.0], ddof=1))
    assert math.isnan(stats.loc["b", "f1_std"]) and math.isnan(stats.loc["b", "f1_ci_low"])


def brute_force_front(x: list[float], y: list[float]) -> list[bool]:
    points = list(zip(x, y))
    return [not (math.isnan(px) or math.isnan(py)) and not any(
        ox >= px and oy >= py and (ox, oy) != (px, py) for ox, oy in points if not math.isnan(ox + oy))
        for px, py in points]


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = list(rng.integers(0, 6, 25).astype(float))
    y = list(rng.integers(0, 6, 25).astype(float))
    x[3], y[4] = math.nan, math.nan
    assert list(pareto_front(x, y)) == brute_force_front(x, y)


def test_words_for_the_seed_study_knobs() -> None:
    train = {"attention": "sdpa", "compile": {"enabled": True, "backend": "inductor", "mode": "default"},
             "padding": "dynamic", "bucketing": True, "lora": {"r": 8, "target_modules": ["query", "value"]},
             "precision": "fp16", "optimizer": "adamw", "learning_rate": 3e-5, "batch_size": 8,
             "max_seq_length": 384}
    assert describe(train) == ("SDPA attention, torch.compile (inductor), dynamic padding + length bucketing, "
                               "LoRA r=8 on query/value, fp16")
    qlora = train | {"quantization": {"bits": 4, "quant_type": "nf4", "compute_dtype": "bf16"}, "compile": None}
    assert "QLoRA r=8 on query/value (4-bit NF4, bf16 compute)" in describe(qlora)
    assert method(qlora) == "QLoRA (4-bit) r=8" and method({"freeze": {"layers": 0}}) == "full"


def test_latex_escaping_and_markdown_pipes() -> None:
    assert latex_escape("a_b & 5% ± 1 #x") == r"a\_b \& 5\% $\pm$ 1 \#x"
    display = pd.DataFrame({"ID": ["A|1"], "F1": ["76.62"]})
    text = Table("t", "T", display, display).to_markdown()
    assert r"| A\|1 | 76.62 |" in text and "|:-----|------:|" in text  # tabulate pads; the alignment row marks both sides


def test_cell_formats() -> None:
    assert fmt_mean_std(76.6234, 0.1234) == "76.62 ± 0.12" and fmt_mean_std(76.6, math.nan) == "76.60"
    assert fmt_delta(-0.05) == "−0.05" and fmt_delta(0.61) == "+0.61"
    assert (fmt_params(443_906), fmt_params(108_893_186)) == ("443.9K", "108.89M")


def test_flatten_nested_and_lists() -> None:
    row: dict[str, object] = {}
    flatten_into(row, {"lora": {"r": 8, "target_modules": ["query", "value"]}, "compile": None}, "train")
    assert row == {"train.lora.r": 8, "train.lora.target_modules": "query,value", "train.compile": None}


def test_collect_never_imports_the_training_stack() -> None:
    code = ("import sys, orchestrator.collect, orchestrator.collect.plots, orchestrator.collect.runner; "
            "bad = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_noise_splits_read_back_from_runs_csv_are_named_as_written() -> None:
    from orchestrator.collect.describe import data_words

    for apply_to in (["train", "eval"], "train,eval"):  # the spec's list, and the list as a runs.csv cell
        words, _ = data_words({"data": {"noise": {"kind": "word_deletion", "rate": 0.1, "apply_to": apply_to}}})
        assert words == "word_deletion 0.1 on train+eval"
