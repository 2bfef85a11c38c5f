"""The report_to and latency knobs: their YAML forms, their errors, and what they do to the run id."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.contract import LatencyConfig, TrainConfig, config_hash


@pytest.mark.parametrize("written, read", [
    (["tensorboard", "wandb"], ("tensorboard", "wandb")), ("wandb", ("wandb",)), ("none", ()), (None, ()), ([], ()),
])
def test_report_to_forms(written: object, read: tuple[str, ...]) -> None:
    assert TrainConfig(report_to=written).report_to == read


@pytest.mark.parametrize("written, message", [
    (["tensorboard", "tensorboard"], "names a target twice"),
    (["mlflow"], "'tensorboard' or 'wandb'"),
])
def test_report_to_errors_name_the_fix(written: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainConfig(report_to=written)


def test_latency_shorthand_and_bounds() -> None:
    assert TrainConfig(latency=True).latency == LatencyConfig(batches=50, warmup=5)
    assert TrainConfig(latency=False).latency is None and TrainConfig().latency is None
    with pytest.raises(ValidationError, match="batches"):
        TrainConfig(latency={"batches": 0})


def test_report_to_keeps_the_run_id_and_latency_changes_it_only_when_set() -> None:
    plain = config_hash(TrainConfig())
    assert config_hash(TrainConfig(report_to=["tensorboard", "wandb"])) == plain
    assert config_hash(TrainConfig(latency=None)) == plain
    assert config_hash(TrainConfig(latency=True)) != plain
