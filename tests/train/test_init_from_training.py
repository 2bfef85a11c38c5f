"""init_from on the CPU: a LoRA source trains and exports its model; an evaluation-only run of it gets the
source's own metrics; a run takes its adapter and trains on; a changed or torn source is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from jobs import entrypoint
from jobs.contract import (
    ADAPTER_EXPORT_DIR,
    MODEL_EXPORT_DIR,
    MODEL_WEIGHTS_FILE,
    RunDir,
    RunSpec,
    SourceRef,
    TrainConfig,
)

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


def _tensors(run_dir: RunDir, name: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run_dir.path / MODEL_EXPORT_DIR / name))


def test_head_only_transfer_sst2_to_mrpc(tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any) -> None:
    """An SST-2 LoRA adapter moved to MRPC with trainable: head: after training the backbone and the adapter are
    bit-identical to the source's, the new head moved away from its initial values, and only the head trained."""
    data = {"synthetic": {"n_train": 64, "n_eval": 32, "seed": 0}}
    lora = {"r": 4, "alpha": 8, "placement": "attn-qkv"}
    source_train = tiny(task="sst2", max_steps=3, lora=lora, data=data)
    source_dir = _write(run_dir_for("src-0"), spec_for(source_train, "src").model_copy(update={"save_model": True}))
    entrypoint.run(str(source_dir.path))
    mrpc = tiny(task="mrpc", max_steps=3, learning_rate=1e-2, lora=lora, data=data)
    trained: dict[str, dict[str, Any]] = {}
    for name, steps in (("initial", 0), ("probe", 3)):  # the 0-step twin exports the initial model
        train = mrpc if steps else _with(mrpc, data={**mrpc.data.model_dump(), "max_train_samples": 0})
        dependent = TrainConfig.model_validate({**train.model_dump(), "init_from": {
            "run": "src", "take": "adapter", "trainable": "head"}})
        ref = SourceRef(run_id="src-0", run_name="src", config_hash="0", take="adapter")
        spec = spec_for(dependent, name).model_copy(update={"source": ref, "save_model": True})
        run_dir = _write(run_dir_for(f"{name}-0"), spec)
        trained[name] = entrypoint.run(str(run_dir.path))
        trained[name]["dir"] = run_dir
    probe = trained["probe"]
    head_size = 64 * 2 + 2  # classifier: hidden 64 -> 2 labels, weight and bias
    assert probe["train"]["steps"] == 3 and probe["params"]["trainable"] == head_size
    assert probe["initial_model"]["take"] == "adapter"
    adapter = f"{ADAPTER_EXPORT_DIR}/adapter_model.safetensors"
    source_adapter, probe_adapter = _tensors(source_dir, adapter), _tensors(probe["dir"], adapter)
    lora_keys = [key for key in source_adapter if "lora_" in key]
    assert len(lora_keys) == 2 * 2 * 3  # 2 layers x query, key, value x A, B
    assert all(source_adapter[key].equal(probe_adapter[key]) for key in lora_keys)
    source_model, initial, after = (_tensors(source_dir, MODEL_WEIGHTS_FILE),
                                    _tensors(trained["initial"]["dir"], MODEL_WEIGHTS_FILE),
                                    _tensors(probe["dir"], MODEL_WEIGHTS_FILE))
    backbone = [key for key in after if not key.startswith("classifier.")]
    assert backbone and all(after[key].equal(source_model[key]) for key in backbone)  # LoRA merged in, unchanged
    assert not after["classifier.weight"].equal(initial["classifier.weight"])  # the head trained
    assert all(after[key].equal(initial[key]) for key in backbone)
