"""SST-2 features: single-sentence classification, same padding modes as QA.

``prepare_sst2_features`` tokenises a dict batch (``sentence``, ``label``) into model
inputs, ``labels`` and ``length`` (real tokens, for bucketing); without
``pad_to_max_length`` features stay unpadded and ``QACollator`` (a generic right-padding
collator; ``SST2Collator`` here) pads each batch. ``accuracy`` is in percent, like the
SQuAD metrics and the seed studies' tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jobs.qa_features import MODEL_INPUT_KEYS, QACollator, bucketed_batches

__all__ = ["SST2Collator", "accuracy", "bucketed_batches", "class_counts", "prepare_sst2_features"]

SST2Collator = QACollator  # pads token columns per batch, passes ``labels`` through unchanged


def prepare_sst2_features(examples: Mapping[str, list], tokenizer: Any, max_seq_length: int,
                          pad_to_max_length: bool) -> dict[str, list]:
    """Model inputs, ``labels`` (0 negative, 1 positive) and ``length`` for a batch of sentences."""
    encoding = tokenizer(
        list(examples["sentence"]),
        truncation=True,
        max_length=max_seq_length,
        padding="max_length" if pad_to_max_length else False,
        padding_side="right",
    )
    columns = {key: encoding[key] for key in MODEL_INPUT_KEYS if key in encoding}
    columns["labels"] = [int(label) for label in examples["label"]]
    columns["length"] = [int(sum(mask)) for mask in encoding["attention_mask"]]
    return columns


def accuracy(predictions: Any, labels: Sequence[int] | np.ndarray) -> dict[str, float]:
    """``{"accuracy": percent}`` from class ids (1-D) or logits (2-D: argmax over the last axis)."""
    predicted = np.asarray(predictions)
    if predicted.ndim == 2:
        predicted = predicted.argmax(axis=-1)
    gold = np.asarray(labels)
    if predicted.shape != gold.shape or gold.size == 0:
        raise ValueError(f"need as many predictions as labels (got {predicted.shape} and {gold.shape})")
    return {"accuracy": 100.0 * float((predicted == gold).mean())}


def class_counts(predictions: Any, num_classes: int) -> dict[str, int]:
    """``{"0": n0, "1": n1, ...}``: how often each class id was predicted (logits: argmax)."""
    predicted = np.asarray(predictions)
    if predicted.ndim == 2:
        predicted = predicted.argmax(axis=-1)
    counts = np.bincount(predicted.astype(int).ravel(), minlength=num_classes)
    return {str(label): int(count) for label, count in enumerate(counts)}
