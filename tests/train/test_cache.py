"""The tokenised-feature cache: a second run with the same data and tokenizer does not tokenise again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytest

from jobs.contract import TrainConfig
from jobs.tasks.data import cached_features, resolve_cache_dir
from jobs.tasks.squad_v2 import features as qa_features
from jobs.trainer import run_training

pytestmark = pytest.mark.train


def test_second_run_reuses_the_features(tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "own-cache"
    train = tiny(data={"cache_dir": str(cache), "synthetic": {"n_train": 40, "n_eval": 8, "seed": 11}})
    first = run_training(spec_for(train, "first"), run_dir_for("first"))
    assert first["data"]["feature_cache_hits"] == {"train": False, "validation": False}

    def no_tokenising(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tokenised again instead of using the cache")

    monkeypatch.setattr(qa_features, "prepare_train_features", no_tokenising)
    monkeypatch.setattr(qa_features, "prepare_eval_features", no_tokenising)
    second = run_training(spec_for(train, "second"), run_dir_for("second"))
    assert second["data"]["feature_cache_hits"] == {"train": True, "validation": True}
    assert second["data"]["train_features"] == first["data"]["train_features"]
    monkeypatch.undo()

    # Another max_seq_length is another cache entry.
    third = run_training(spec_for(tiny(data=train.data.model_dump(), max_seq_length=48, doc_stride=16), "third"),
                         run_dir_for("third"))
    assert third["data"]["feature_cache_hits"] == {"train": False, "validation": False}
    assert len([p for p in (cache / "features").glob("squad_v2-train-*") if p.is_dir()]) == 2


def test_default_cache_is_the_experiments(tiny_model_dir: str, spec_for: Any, run_dir_for: Any) -> None:
    train = TrainConfig(model_name_or_path=tiny_model_dir, random_init=True, data={"synthetic": {}})
    run_dir = run_dir_for("r")
    assert resolve_cache_dir(train, run_dir) == run_dir.path.resolve().parent.parent / "cache"


def test_cache_build_is_atomic_and_keyed(tmp_path: Path) -> None:
    examples = datasets.Dataset.from_dict({"x": [1, 2, 3]})
    calls = []

    def build(dataset: datasets.Dataset) -> datasets.Dataset:
        calls.append(len(dataset))
        return dataset.map(lambda row: {"y": row["x"] * 2})

    _, hit = cached_features(examples, build, {"k": 1}, tmp_path, "demo")
    again, hit_again = cached_features(examples, build, {"k": 1}, tmp_path, "demo")
    _, hit_other = cached_features(examples, build, {"k": 2}, tmp_path, "demo")
    assert (hit, hit_again, hit_other) == (False, True, False)
    assert calls == [3, 3] and again["y"] == [2, 4, 6]
    leftovers = [p.name for p in (tmp_path / "features").iterdir() if p.name.startswith(".building")]
    assert leftovers == []


def test_a_failed_build_leaves_no_cache_entry(tmp_path: Path) -> None:
    examples = datasets.Dataset.from_dict({"x": [1]})

    def broken(dataset: datasets.Dataset) -> datasets.Dataset:
        raise RuntimeError("tokenizer exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        cached_features(examples, broken, {"k": 1}, tmp_path, "demo")
    assert [p.name for p in (tmp_path / "features").iterdir() if not p.name.endswith(".lock")] == []
