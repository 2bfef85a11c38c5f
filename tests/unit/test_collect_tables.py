"""collect's canonical tables checked number by number against the fixture's inputs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import DEVICE_TOTAL_MIB, SEED_STUDY, TOTAL_PARAMS, Study, build_seed_study

from orchestrator.collect import ALL_FORMATS, CollectReport, collect

GPU_MIB = 6500.0
# Configurations with an anomaly of their current runs: kept in the tables, never recommended.
FLAGGED = {"A2": "nan_loss", "A4-b": "collapse", "B3": "short_run", "C2": "warnings"}


T_975 = {2: 4.302652729911275, 3: 3.182446305284263}  # Student t quantiles by degrees of freedom


def expected_ci(values: list[float]) -> tuple[float, float]:
    """The documented t interval (none below 3 seeds), written out independently of
    orchestrator.collect.stats (issue 14 replaced the percentile bootstrap)."""
    data = np.asarray(values, dtype=float)
    if data.size < 3:
        return (math.nan, math.nan)
    half = T_975[data.size - 1] * data.std(ddof=1) / math.sqrt(data.size)
    return float(data.mean() - half), float(data.mean() + half)


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Study, CollectReport, Path]:
    root = tmp_path_factory.mktemp("seed-study")
    study = build_seed_study(root)
    out_dir = root / "results" / "seed-study"
    report = collect(study.experiment_dir, out_dir, gpu_memory_mib=GPU_MIB)
    return study, report, out_dir


def table(out_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out_dir / "tables" / f"{name}.csv", keep_default_na=False, na_values=[""]).set_index("id")


def mean(study: Study, config_id: str, key: str) -> float:
    return float(np.mean(study.values(config_id, key)))


def config_ids() -> list[str]:
    return sorted({config.config_id for config in SEED_STUDY})


def test_report_counts_every_state(collected: tuple[Study, CollectReport, Path]) -> None:
    _, report, _ = collected
    # 14 configs x 3 seeds, a stale run, a run no longer in the matrix, a running and a pending run
    assert (report.runs_found, report.completed, report.failed, report.corrupt, report.running, report.pending) == (
        46, 42, 1, 1, 1, 1)
    assert not report.all_ended


def test_accuracy_table_means_std_and_t_ci(collected: tuple[Study, CollectReport, Path]) -> None:
    study, _, out_dir = collected
    accuracy = table(out_dir, "accuracy_speed")
    assert sorted(accuracy.index) == config_ids()
    for config_id in config_ids():
        row = accuracy.loc[config_id]
        f1 = study.values(config_id, "f1")
        assert row["n"] == len(f1)
        assert row["f1_mean"] == pytest.approx(np.mean(f1), rel=1e-5)
        assert row["f1_std"] == pytest.approx(np.std(f1, ddof=1), rel=1e-4)
        low, high = expected_ci(f1)
        assert (row["f1_ci_low"], row["f1_ci_high"]) == (pytest.approx(low, rel=1e-5, nan_ok=True),
                                                         pytest.approx(high, rel=1e-5, nan_ok=True))
        assert row["exact_mean"] == pytest.approx(mean(study, config_id, "exact"), rel=1e-5)
        for column, key in (("train_samples_per_s_mean", "train_samples_per_s"),
                            ("train_runtime_s_mean", "train_runtime_s"), ("eval_runtime_s_mean", "eval_runtime_s"),
                            ("eval_samples_per_s_mean", "eval_samples_per_s")):
            assert row[column] == pytest.approx(mean(study, config_id, key), rel=1e-5), (config_id, column)


def test_failed_and_corrupt_runs_leave_fewer_seeds(collected: tuple[Study, CollectReport, Path]) -> None:
    _, _, out_dir = collected
    accuracy = table(out_dir, "accuracy_speed")
    assert accuracy.loc["C2-8", "n"] == 2  # seed 3 hit CUDA OOM
    assert accuracy.loc["D1", "n"] == 2  # seed 3's result.json is truncated; seeds 4, 5 still going


def test_nan_train_loss_is_left_out_of_the_mean(collected: tuple[Study, CollectReport, Path]) -> None:
    study, _, out_dir = collected
    losses = [value for value in study.values("A2", "train_loss") if not math.isnan(value)]
    assert table(out_dir, "accuracy_speed").loc["A2", "train_loss_mean"] == pytest.approx(np.mean(losses))


def test_deltas_against_the_baseline(collected: tuple[Study, CollectReport, Path]) -> None:
    study, _, out_dir = collected
    accuracy = table(out_dir, "accuracy_speed")
    base_speed, base_f1 = mean(study, "A1", "train_samples_per_s"), mean(study, "A1", "f1")
    for config_id in config_ids():
        row = accuracy.loc[config_id]
        assert row["baseline_id"] == "A1"
        assert row["speedup"] == pytest.approx(mean(study, config_id, "train_samples_per_s") / base_speed, rel=1e-5)
        assert row["f1_delta"] == pytest.approx(mean(study, config_id, "f1") - base_f1, rel=1e-4, abs=1e-4)
    # the seed study's headline, read off the table: A4-nb is 1.17x faster at +0.6 F1
    assert round(accuracy.loc["A4-nb", "speedup"], 2) == 1.17
    assert round(accuracy.loc["A4-nb", "f1_delta"], 1) == 0.6


def test_pareto_membership(collected: tuple[Study, CollectReport, Path]) -> None:
    # issue 14: anomalous configurations (B3's short run was on the front) are left out of it
    study, _, out_dir = collected
    points = {cid: (mean(study, cid, "train_samples_per_s"), mean(study, cid, "f1")) for cid in config_ids()
              if cid not in FLAGGED}
    dominated = {cid for cid, (x, y) in points.items()
                 if any(ox >= x and oy >= y and (ox, oy) != (x, y) for ox, oy in points.values())}
    expected = set(points) - dominated
    accuracy = table(out_dir, "accuracy_speed")
    assert set(accuracy.index[accuracy["pareto"].astype(bool)]) == expected == {"A4-nb", "B2"}


def test_one_accuracy_table_a_series(collected: tuple[Study, CollectReport, Path]) -> None:
    _, _, out_dir = collected
    for series in "ABCD":
        rows = table(out_dir, f"accuracy_speed_{series}")
        assert sorted(rows.index) == sorted(cid for cid in config_ids() if cid.startswith(series))
    assert not (out_dir / "tables" / "accuracy_speed_Z.csv").exists()  # Z1 left the matrix


def test_flags_mark_anomalous_configurations(collected: tuple[Study, CollectReport, Path]) -> None:
    _, _, out_dir = collected
    accuracy = table(out_dir, "accuracy_speed")
    flagged = {cid: flags for cid, flags in accuracy["flags"].fillna("").items() if flags}
    assert flagged == FLAGGED


def test_configuration_table_words_and_run_dirs(collected: tuple[Study, CollectReport, Path]) -> None:
    study, _, out_dir = collected
    configs = table(out_dir, "configurations")
    assert configs.loc["A1", "configuration"] == "eager attention, no compile, pad to max length, fp16"
    assert configs.loc["A4-b", "configuration"] == (
        "SDPA attention, torch.compile (inductor), dynamic padding + length bucketing, fp16")
    assert "LoRA r=8 on query/key/value" in configs.loc["B1 (r=8)", "configuration"]
    assert "BitFit (biases only)" in configs.loc["B2", "configuration"]
    assert "lr 0.001" in configs.loc["B2", "configuration"]
    assert "lower 10 encoder layers frozen" in configs.loc["B3", "configuration"]
    assert "8-bit AdamW" in configs.loc["C1", "configuration"]
    assert "torch.compile (aot_eager)" in configs.loc["D1", "configuration"]
    run_ids = {run.run_id for run in study.runs if run.config.config_id == "A1" and run.current}
    assert {path.removeprefix("runs/") for path in configs.loc["A1", "run_dirs"].split(";")} == run_ids


def test_peft_table_trainable_share(collected: tuple[Study, CollectReport, Path]) -> None:
    _, _, out_dir = collected
    peft = table(out_dir, "peft")
    for config in SEED_STUDY:
        row = peft.loc[config.config_id]
        assert row["trainable_params"] == config.trainable
        assert row["total_params"] == TOTAL_PARAMS
        assert row["trainable_share_pct"] == pytest.approx(100 * config.trainable / TOTAL_PARAMS, rel=1e-5)
    assert peft.loc["B1 (r=8)", "method"] == "LoRA r=8"
    assert peft.loc["B2", "method"] == "BitFit"


def test_memory_and_vram_tables(collected: tuple[Study, CollectReport, Path]) -> None:
    study, _, out_dir = collected
    memory, vram = table(out_dir, "memory"), table(out_dir, "vram")
    for config_id in config_ids():
        assert vram.loc[config_id, "peak_allocated_mib_mean"] == pytest.approx(
            mean(study, config_id, "peak_allocated_mib"))
        assert vram.loc[config_id, "peak_reserved_mib_mean"] == pytest.approx(mean(study, config_id, "peak_reserved_mib"))
        assert vram.loc[config_id, "device_total_mib"] == DEVICE_TOTAL_MIB
        assert memory.loc[config_id, "step_peak_allocated_mib_mean"] == pytest.approx(
            mean(study, config_id, "step_peak_allocated_mib"))
    assert memory.loc["C1", "optimizer"] == "adamw_8bit"
    assert memory.loc["C2", "gradient_checkpointing"]
    a1 = mean(study, "A1", "step_peak_allocated_mib")
    assert memory.loc["A3", "step_allocated_change_pct"] == pytest.approx(100 * (3087 / a1 - 1), rel=1e-5)
    # issue 14: the F1 column was blank (a loop variable shadowed the metric key; an empty compile_mean instead)
    assert "compile_mean" not in memory.columns
    for config_id in config_ids():
        assert memory.loc[config_id, "f1_mean"] == pytest.approx(mean(study, config_id, "f1"), rel=1e-5)
    header = (out_dir / "tables" / "memory.md").read_text().splitlines()[2]
    assert header.split("|")[-2].strip() == "F1"
    a3_row = next(line for line in (out_dir / "tables" / "memory.md").read_text().splitlines()
                  if line.startswith("| A3 "))  # "| A3   |": tabulate pads the column
    assert a3_row.split("|")[-2].strip() == f"{mean(study, 'A3', 'f1'):.2f}"


def expected_recipes(study: Study) -> dict[str, str]:
    """The recipe rules applied by hand to the fixture's numbers."""
    pool = {cid: {"f1": mean(study, cid, "f1"), "speed": mean(study, cid, "train_samples_per_s"),
                  "memory": mean(study, cid, "peak_reserved_mib")}
            for cid in config_ids() if cid not in FLAGGED and study.values(cid, "f1")}
    base = pool["A1"]["f1"]
    best_f1 = lambda limit: max((c for c in pool if pool[c]["memory"] <= limit), key=lambda c: pool[c]["f1"])
    return {
        "fastest": max((c for c in pool if pool[c]["f1"] >= base - 0.5), key=lambda c: pool[c]["speed"]),
        "best_under_8gb": best_f1(8192), "best_under_t4": best_f1(15360), "best_on_gpu": best_f1(GPU_MIB),
        "leanest": min((c for c in pool if pool[c]["f1"] >= base - 2.0), key=lambda c: pool[c]["memory"]),
    }


def test_recipes(collected: tuple[Study, CollectReport, Path]) -> None:
    study, _, out_dir = collected
    recipes = pd.read_csv(out_dir / "tables" / "recipes.csv").set_index("recipe")
    expected = expected_recipes(study)
    assert expected == {"fastest": "A4-nb", "best_under_8gb": "C1", "best_under_t4": "A4-nb", "best_on_gpu": "B2",
                        "leanest": "C2-8"}
    assert recipes["id"].to_dict() == expected
    assert recipes.loc["fastest", "f1_mean"] == pytest.approx(mean(study, "A4-nb", "f1"), rel=1e-5)
    assert recipes.loc["leanest", "memory_mib"] == pytest.approx(mean(study, "C2-8", "peak_reserved_mib"))
    text = (out_dir / "recipes.md").read_text()
    a4nb = [run.run_id for run in study.runs if run.config.config_id == "A4-nb"]
    assert "Fastest within 0.5 F1 of the baseline A1" in text and all(run_id in text for run_id in a4nb)


def test_runs_csv_and_parquet_one_row_a_run(collected: tuple[Study, CollectReport, Path]) -> None:
    study, _, out_dir = collected
    runs_csv = pd.read_csv(out_dir / "runs.csv")
    runs_parquet = pd.read_parquet(out_dir / "runs.parquet")
    assert len(runs_csv) == len(runs_parquet) == 46
    assert list(runs_csv.columns) == list(runs_parquet.columns)
    for column in ("run_id", "config_id", "series", "seed", "status", "job_id", "node", "git_commit",
                   "train.learning_rate", "train.lora.r", "metrics.HasAns_f1", "metrics.NoAns_f1",
                   "train_result.tokens_per_s", "memory.peak_reserved_mib", "memory.device_total_mib",
                   "params.trainable", "eval.samples_per_s", "failure.reason", "stale", "anomalies"):
        assert column in runs_parquet.columns, column
    row = runs_parquet.set_index("run_id").loc[study.run("B1", 2, {"lora.r": 16}).run_id]
    assert row["metrics.f1"] == pytest.approx(study.run("B1", 2, {"lora.r": 16}).values["f1"])
    assert row["train.lora.r"] == 16 and row["seed"] == 2 and row["series"] == "B"
    stale = runs_parquet.set_index("run_id").loc[study.specials["stale"]]
    assert stale["stale"] and not stale["current"]


def test_rendered_tables_have_every_row(collected: tuple[Study, CollectReport, Path]) -> None:
    _, _, out_dir = collected
    for csv_path in (out_dir / "tables").glob("*.csv"):
        rows = len(pd.read_csv(csv_path))
        markdown = csv_path.with_suffix(".md").read_text().splitlines()
        assert sum(1 for line in markdown if line.startswith("| ")) == rows + 1, csv_path.name
        latex = csv_path.with_suffix(".tex").read_text()
        body = latex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
        assert "\\toprule" in latex and body.count("\\\\\n") == rows, csv_path.name
        assert "_" not in body.replace("\\_", ""), csv_path.name  # every underscore escaped


def test_summary_lists_anomalies_before_the_tables(collected: tuple[Study, CollectReport, Path]) -> None:
    _, report, out_dir = collected
    summary = (out_dir / "summary.md").read_text()
    assert summary == report.summary_markdown
    assert summary.index("## Anomalies") < summary.index("## Problems") < summary.index("## Configurations")
    anomalies = summary.split("## Anomalies", 1)[1].split("## Problems", 1)[0]
    assert "A4-b-seed1" in anomalies and "collapse" in anomalies


def test_plots_and_every_format_written(collected: tuple[Study, CollectReport, Path]) -> None:
    _, report, out_dir = collected
    for name in ("pareto", "vram", "loss_curves", "lora_rank"):
        assert (out_dir / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (out_dir / "plots" / f"{name}.svg").read_text()
    written = {path.suffix.lstrip(".") for path in report.written}
    assert written == ALL_FORMATS
    assert not list(out_dir.rglob(".*.tmp"))
