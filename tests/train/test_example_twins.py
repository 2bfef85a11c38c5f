"""Issue 11, shipped studies: every CPU twin in examples/ (``*_cpu.yaml``) runs end to end as a user
would run it - ``orchestrate submit`` through the local executor, wait, ``orchestrate collect`` - on
the packaged MiniLM and generated SST-2 data, and its collected results show what its study is for
(the few-shot N = 0 run only evaluates, the seeds table has n and a 95% CI, the noise rows name the
noise, the capacity study draws its train-vs-validation curves, ...).

All twins are submitted at once by a module fixture: each twin's local queue runs its runs one after
another, the twins side by side, so the two cores stay busy while the first test waits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.matrix import load_matrix
from tests.integration import tiny

pytestmark = [pytest.mark.train, pytest.mark.slow]

EXAMPLES = tiny.REPO / "examples"
# twins of runs built on runs, each run end to end by its own test (a chain, with its own assertions)
OWN_TEST = {"sst2_selection_cpu.yaml": "tests/integration/test_selection_local.py",
            "sst2_transfer_cpu.yaml": "tests/integration/test_transfer_twin.py"}
TWINS = sorted(path for path in EXAMPLES.glob("*_cpu.yaml") if path.name not in OWN_TEST)
# one torch thread a worker: six twins' workers share two cores without oversubscribing them
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# classification studies without a CPU twin, and why
NO_TWIN = {"sst2_peft.yaml": "study 2 is DistilBERT's, which is not packaged; its LoRA-vs-full runs on MiniLM are "
                             "sst2_efficiency_cpu.yaml and its rank sweep sst2_sensitivity_cpu.yaml"}


def _orchestrate(cwd: Path, *args: str) -> str:
    return tiny.orchestrate(cwd, *args, env=WORKER_ENV, timeout=900).stdout


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A working directory in which every twin has been submitted (not waited for)."""
    cwd = tmp_path_factory.mktemp("twins")
    try:
        for twin in TWINS:
            assert "as local job" in _orchestrate(cwd, "submit", str(twin))
        yield cwd
    finally:  # a failed test leaves no queue running behind it
        for twin in TWINS:
            tiny.orchestrate(cwd, "cancel", load_matrix(twin).experiment, check=False)


def _tables(results: Path) -> dict[str, pd.DataFrame]:
    found = {path.stem: pd.read_csv(path) for path in (results / "tables").glob("*.csv")}
    found["runs"] = pd.read_csv(results / "runs.csv")
    return found


def _result(results: Path, run_dir: str) -> dict:
    """result.json of a run, from its directory as runs.csv names it (relative to the experiment)."""
    return json.loads((results.parents[1] / "scratch" / results.name / run_dir / "result.json").read_text())


# ------------------------------------------------------------------ what each study is for


def _efficiency(results: Path, tables: dict[str, pd.DataFrame]) -> None:
    speed = tables["accuracy_speed"].set_index("id")
    assert sorted(speed.index) == ["full-fp32", "lora"]
    assert speed.loc["full-fp32", "speedup"] == 1.0 and speed.loc["lora", "speedup"] > 0
    for column in ("latency_1_p50_ms_mean", "latency_1_p95_ms_mean", "latency_N_p50_ms_mean", "latency_N_p95_ms_mean"):
        assert (speed[column] > 0).all(), column  # measured on the CPU, every configuration
    assert set(speed["latency_device"]) == {"cpu"}
    peft = tables["peft"].set_index("id")
    assert "lora" in peft.index  # trainable parameters of LoRA against full fine-tuning
    runs = tables["runs"].set_index("base_name")
    assert runs.loc["lora", "params.trainable"] < runs.loc["full-fp32", "params.trainable"] / 10
    assert runs["memory.peak_allocated_mib"].isna().all()  # not measured on a CPU: empty, never 0


def _sensitivity(results: Path, tables: dict[str, pd.DataFrame]) -> None:
    runs = tables["runs"]
    lora = runs[runs["base_name"] == "lora"]
    assert sorted(zip(lora["train.learning_rate"], lora["train.lora.r"])) == [(1e-4, 4), (1e-4, 16), (1e-3, 4), (1e-3, 16)]
    configurations = tables["configurations"]["configuration"]
    assert len(configurations) == 5  # the table names each configuration's learning rate and rank
    for lr, r in ((0.0001, 4), (0.001, 16)):
        assert (configurations.str.contains(f"LoRA r={r} on attn-qkv") & configurations.str.contains(f"lr {lr},")).any()
    assert tables["accuracy_speed"]["accuracy_mean"].notna().all()


def _seeds(results: Path, tables: dict[str, pd.DataFrame]) -> None:
    speed = tables["accuracy_speed"].set_index("id")
    assert sorted(speed.index) == ["full", "lora-r16"] and (speed["n"] == 3).all()
    for config, row in speed.iterrows():  # three seeds give a Student-t 95% interval around the mean
        assert row["accuracy_ci_low"] <= row["accuracy_mean"] <= row["accuracy_ci_high"], config
        assert row["accuracy_std"] >= 0
    assert sorted(tables["runs"]["seed"]) == [1, 1, 2, 2, 3, 3]
    assert "95% CI" in (results / "summary.md").read_text()


def _fewshot(results: Path, tables: dict[str, pd.DataFrame]) -> None:
    runs = tables["runs"]
    assert sorted(runs["train.data.max_train_samples"]) == [0, 16, 16, 160, 160]
    for _, row in runs.iterrows():
        result = _result(results, row["run_dir"])
        n_rows = int(row["train.data.max_train_samples"])
        if n_rows == 0:  # zero-shot: the initial model evaluated, no training step
            assert result["zero_shot"] is True and result["train"]["steps"] == 0, row["run_id"]
            assert result["data"]["train_features"] == 0
        else:
            assert result["zero_shot"] is False and result["train"]["steps"] == 16, row["run_id"]
            assert result["data"]["train_examples"] == n_rows
        assert 0 <= result["metrics"]["accuracy"] <= 100
    configurations = tables["configurations"]
    assert sorted(configurations["max_train_samples"]) == [0, 16, 16, 160, 160]
    zero_shot = configurations[configurations["max_train_samples"] == 0]
    assert list(zero_shot["series"]) == ["full"]


def _noise(results: Path, tables: dict[str, pd.DataFrame]) -> None:
    configurations = tables["configurations"].set_index("id")
    assert len(configurations) == 5
    assert configurations.loc["clean", "noise"] == "none"
    noisy = configurations.drop(index="clean")["noise"]
    for kind in ("char_substitution", "word_deletion"):
        for rate in ("0.05", "0.2"):
            assert (noisy == f"{kind} {rate} on train+eval").sum() == 1, (kind, rate, list(noisy))
    for _, row in tables["runs"].iterrows():
        run_dir = results.parents[1] / "scratch" / results.name / row["run_dir"]
        assert (run_dir / "train_subset.json").is_file()
        assert (run_dir / "noise_sample.json").is_file() == (row["base_name"] == "noisy"), row["run_id"]


def _capacity(results: Path, tables: dict[str, pd.DataFrame]) -> None:
    assert (results / "plots" / "train_vs_validation.png").stat().st_size > 10_000
    speed = tables["accuracy_speed"].set_index("id")
    assert sorted(speed.index) == ["freeze (layers=3)", "freeze (layers=5)", "freeze-0"] and (speed["n"] == 1).all()
    assert speed["best_epoch_mean"].between(1, 3).all() and speed["best_step_mean"].notna().all()
    runs = tables["runs"].set_index("base_name")
    trainable = runs.groupby(level=0)["params.trainable"].first()
    assert trainable["freeze-0"] > trainable["freeze"].max() * 2  # freezing cuts the trainable parameters


CHECKS: dict[str, Callable[[Path, dict[str, pd.DataFrame]], None]] = {
    "sst2_efficiency_cpu": _efficiency, "sst2_sensitivity_cpu": _sensitivity, "sst2_seeds_cpu": _seeds,
    "sst2_fewshot_cpu": _fewshot, "sst2_noise_cpu": _noise, "sst2_capacity_cpu": _capacity,
}


def test_every_classification_study_has_a_cpu_twin_and_every_twin_a_check() -> None:
    studies = {path.name for path in EXAMPLES.glob("sst2_*.yaml") if not path.stem.endswith("_cpu")}
    twinned = {path.name.replace("_cpu", "") for path in [*TWINS, *(EXAMPLES / name for name in OWN_TEST)]}
    assert all((tiny.REPO / test).is_file() for test in OWN_TEST.values())
    assert studies - twinned == set(NO_TWIN), "a classification study in examples/ has no CPU twin"
    assert {path.stem for path in TWINS} == set(CHECKS), "every twin needs its study-specific check here"


@pytest.mark.parametrize("twin", TWINS, ids=lambda path: path.stem)
def test_twin_runs_end_to_end(launched: Path, twin: Path) -> None:
    matrix = load_matrix(twin)
    waited = _orchestrate(launched, "submit", str(twin), "--wait")  # all submitted already: nothing twice
    assert f"{matrix.experiment}: 0 new," in waited, waited
    _orchestrate(launched, "collect", matrix.experiment)
    results = launched / "results" / matrix.experiment
    tables = _tables(results)
    runs = tables["runs"]
    assert sorted(runs["run_id"]) == sorted(run.run_id for run in matrix.runs)
    assert set(runs["status"]) == {"completed"}
    CHECKS[matrix.experiment](results, tables)
