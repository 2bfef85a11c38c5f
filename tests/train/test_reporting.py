"""report_to and latency on tiny SST-2 runs: TensorBoard's own reader reads the curves, W&B writes an
offline run named by the run id, no file holds the W&B key, and latency_ms has its figures."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobs.contract import TENSORBOARD_DIR, WANDB_DIR, TrainConfig
from jobs.reporting import ReportingUnavailable, require_packages
from jobs.trainer import run_training

pytestmark = pytest.mark.train

SST2 = {"synthetic": {"n_train": 120, "n_eval": 24, "seed": 0}}
LATENCY = {"batches": 6, "warmup": 2}


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in ``log_dir``'s event files as [(step, value)], read by TensorBoard itself."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_reads_the_curves_and_latency_is_measured(
        tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any) -> None:
    pytest.importorskip("tensorboard")
    train = tiny(task="sst2", data=SST2, max_steps=3, logging_steps=1, eval_batch_size=8, eval_steps=2,
                 train_eval_samples=8, report_to=["tensorboard"], latency=LATENCY)
    run_dir = run_dir_for("tb")
    result = run_training(spec_for(train, "tb"), run_dir)
    curves = scalars(run_dir.path / TENSORBOARD_DIR)
    assert [step for step, _ in curves["train/loss"]] == [1, 2, 3]
    lines = [json.loads(line) for line in run_dir.metrics_path.read_text().splitlines()]
    assert [line["step"] for line in lines if "split" not in line] == [1, 2, 3]  # the same logging steps
    # the evaluations during training (step 2 and the last step) are on TensorBoard too, both splits, then
    # the final evaluation's figures
    during = [line for line in lines if "split" in line]
    assert [line["step"] for line in during if line["split"] == "validation"] == [2, 3]
    for split, tag in (("validation", "eval/"), ("train", "train/sample_")):
        for metric in ("accuracy", "loss"):
            assert curves[tag + metric][:2] == [(line["step"], pytest.approx(line["metrics"][metric]))
                                                for line in during if line["split"] == split]
    assert curves["eval/accuracy"][2:] == [(3, pytest.approx(result["metrics"]["accuracy"]))]
    assert [step for step, _ in curves["train/learning_rate"]] == [1, 2, 3]

    latency = result["latency_ms"]
    assert latency["batch_size"] == 8 and latency["device"] == "cpu" and latency["unmeasured"] == {}
    assert (latency["batches"], latency["warmup"]) == (6, 2)
    for key in ("batch_1", "batch_N"):
        assert 0 < latency[key]["p50"] <= latency[key]["p95"], latency


def test_a_run_without_report_to_or_latency_writes_neither(
        tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any) -> None:
    run_dir = run_dir_for("plain")
    result = run_training(spec_for(tiny(task="sst2", data=SST2, max_steps=1), "plain"), run_dir)
    assert result["latency_ms"] is None
    assert not (run_dir.path / TENSORBOARD_DIR).exists() and not (run_dir.path / WANDB_DIR).exists()


SECRET = "wandb-k3y-never-in-files-5d1e07"


def test_wandb_runs_offline_named_by_run_id_and_no_file_holds_the_key(
        tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any, tmp_path: Path,
        worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole worker (env.json, worker.log, result.json) with WANDB_API_KEY in its environment and
    no WANDB_MODE: W&B must run offline, and the key's value must be in no file of the experiment."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    # eval_batch_size above the 24 evaluation rows: batch N cannot be measured, and says so
    train = tiny(task="sst2", data=SST2, max_steps=2, logging_steps=1, eval_batch_size=32,
                 report_to=["tensorboard", "wandb"], latency=LATENCY)
    run_dir = run_dir_for("wb")
    spec = spec_for(train, "wb")
    run_dir.write_spec(spec)
    status, stderr = worker.run(run_dir)
    assert status == 0, stderr

    offline = sorted((run_dir.path / WANDB_DIR).glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir.path / WANDB_DIR).iterdir())
    records = b"".join(path.read_bytes() for path in offline[0].glob("run-*.wandb"))
    assert spec.run_id.encode() in records and spec.experiment.encode() in records  # name and group
    assert scalars(run_dir.path / TENSORBOARD_DIR)["train/loss"]

    experiment = run_dir.path.parent.parent  # <tmp>/test: the experiment directory
    holding = [str(path) for path in experiment.rglob("*")
               if path.is_file() and not path.is_symlink() and SECRET.encode() in path.read_bytes()]
    assert holding == []
    assert "WANDB_API_KEY" in os.environ  # the key was there to leak

    result = run_dir.read_result()
    assert result is not None and result.latency_ms is not None
    assert result.latency_ms.batch_N is None and "32" in result.latency_ms.unmeasured["batch_N"]
    assert result.latency_ms.batch_1 is not None and result.latency_ms.batch_1.p50 > 0


def test_a_missing_package_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ReportingUnavailable, match=r"wandb is not installed .* drop wandb from report_to"):
        require_packages(("tensorboard", "wandb"))
