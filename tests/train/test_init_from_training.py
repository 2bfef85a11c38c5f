"""init_from on the CPU: a LoRA source trains and exports its model; an evaluation-only run of it gets the
source's own metrics; a run takes its adapter and trains on; a changed or torn source is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from jobs import entrypoint
from jobs.contract import MODEL_EXPORT_DIR, MODEL_WEIGHTS_FILE, RunDir, RunSpec, SourceRef, TrainConfig

pytestmark = pytest.mark.train


def _write(run_dir: RunDir, spec: RunSpec) -> RunDir:
    run_dir.write_spec(spec)
    return run_dir


def _dependent(spec_for: Any, train: TrainConfig, name: str, take: str, source_hash: str = "0") -> RunSpec:
    ref = SourceRef(run_id="src-0", run_name="src", config_hash=source_hash, take=take)  # type: ignore[arg-type]
    dependent = _with(train, init_from={"run": "src", "take": take})
    return spec_for(dependent, name).model_copy(update={"source": ref})


def _with(train: TrainConfig, **changes: Any) -> TrainConfig:
    return TrainConfig.model_validate({**train.model_dump(), **changes})


def test_chain_on_cpu(tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any) -> None:
    base = tiny(task="sst2", max_steps=3, data={"synthetic": {"n_train": 64, "n_eval": 32, "seed": 0}})
    source_train = _with(base, lora={"r": 4, "alpha": 8, "target_modules": ["query", "value"]})
    source_dir = _write(run_dir_for("src-0"), spec_for(source_train, "src").model_copy(update={"save_model": True}))
    source = entrypoint.run(str(source_dir.path))
    assert (source_dir.path / MODEL_EXPORT_DIR / "complete.json").is_file()

    evaluate = _with(base, data={**base.data.model_dump(), "max_train_samples": 0})
    eval_dir = _write(run_dir_for("eval-0"), _dependent(spec_for, evaluate, "eval", "model"))
    evaluated = entrypoint.run(str(eval_dir.path))
    assert evaluated["train"]["steps"] == 0 and evaluated["zero_shot"] is True
    assert evaluated["initial_model"] == {"source_run_id": "src-0", "source_run_name": "src", "take": "model"}
    # the evaluation-only run evaluated the source's trained model (LoRA merged in): the same figures
    assert evaluated["metrics"]["accuracy"] == pytest.approx(source["metrics"]["accuracy"])
    assert evaluated["eval"]["predicted_classes"] == source["eval"]["predicted_classes"]

    adapter_dir = _write(run_dir_for("adapter-0"), _dependent(spec_for, base, "adapter", "adapter"))
    continued = entrypoint.run(str(adapter_dir.path))
    assert continued["train"]["steps"] == 3 and continued["methods"] == []
    assert 0 < continued["params"]["trainable"] < source["params"]["total"] / 2  # adapter + new head only

    stale_dir = _write(run_dir_for("stale-0"), _dependent(spec_for, evaluate, "stale", "model", source_hash="feed"))
    with pytest.raises(entrypoint.WorkerFailed):
        entrypoint.run(str(stale_dir.path))
    failure = stale_dir.read_failure()
    assert failure is not None and failure.reason == "source_unusable" and "config hash 0, feed was recorded" in failure.message

    weights = source_dir.path / MODEL_EXPORT_DIR / MODEL_WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes() + b"\0")
    torn_dir = _write(run_dir_for("torn-0"), _dependent(spec_for, evaluate, "torn", "model"))
    with pytest.raises(entrypoint.WorkerFailed):
        entrypoint.run(str(torn_dir.path))
    failure = torn_dir.read_failure()
    assert failure is not None and failure.reason == "source_unusable"
    assert f"{MODEL_WEIGHTS_FILE} has" in failure.message and "model/ is not whole" in failure.message
