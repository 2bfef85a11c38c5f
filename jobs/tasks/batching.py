"""Task-independent batching: dynamic right padding per batch, packing, and length bucketing.

Features are dicts of token columns (``MODEL_INPUT_KEYS``), label columns (``LABEL_KEYS``)
and bookkeeping columns (``length``: real tokens; a task's own, e.g. ``example_id``).

Label alignment, the bug of the seed study's bucketing run: every feature carries its
own labels next to its ``input_ids``. Batches are lists of feature *indices*
(``bucketed_batches``); the collator receives the feature dicts of one batch and pads
only the token columns, on the right, so a label (a class id, or a token index counted
from the left) is never moved and can never be reordered apart from its tokens.
torch is imported only when a batch is collated.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
LABEL_KEYS = ("start_positions", "end_positions", "labels")


def _as_list(value: Any) -> list[Any]:
    return value.tolist() if hasattr(value, "tolist") else list(value)


class PaddingCollator:
    """Pads the token columns of a list of feature dicts on the right, per batch.

    ``input_ids`` get the tokenizer's pad id, ``attention_mask`` 0, ``token_type_ids``
    the pad type id, to the longest feature of the batch (rounded up to
    ``pad_to_multiple_of``). Label columns (``start_positions``, ``end_positions``,
    ``labels``) pass through unchanged: right padding never moves a token index.
    Other columns (``length``, ``example_id``, ``offset_mapping``) are dropped.
    """

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token")
        self.pad_values = {"input_ids": int(tokenizer.pad_token_id), "attention_mask": 0,
                           "token_type_ids": int(getattr(tokenizer, "pad_token_type_id", 0) or 0)}
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        if not features:
            raise ValueError("cannot collate an empty batch")
        width = max(len(feature["input_ids"]) for feature in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, Any] = {}
        for key, pad in self.pad_values.items():
            if key in features[0]:
                rows = [_as_list(feature[key]) for feature in features]
                batch[key] = torch.tensor([row + [pad] * (width - len(row)) for row in rows], dtype=torch.long)
        for key in LABEL_KEYS:
            if key in features[0]:
                batch[key] = torch.tensor([int(feature[key]) for feature in features], dtype=torch.long)
        _check_positions(features)
        return batch


class PackingCollator:
    """Packs a list of feature dicts into rows of ``row_len`` tokens (:func:`jobs.packing.pack`).

    Token columns become packed rows (``input_ids``, ``token_type_ids``, ``position_ids``, a block-diagonal
    ``attention_mask``) plus each feature's place (``feature_row``, ``feature_offset``, ``feature_length``);
    label columns stay one value a feature, in the batch's order (start/end positions count from the
    feature's own first token, as unpacked). The row count is rounded up to ``rows_multiple`` (rows of
    padding, attending only to themselves) so a compiled model sees few distinct shapes. ``feature_length`` comes first in the dict: the Trainer takes a
    batch's size from its first tensor, and that must count features, not rows.
    """

    def __init__(self, row_len: int, rows_multiple: int = 1) -> None:
        self.row_len, self.rows_multiple = row_len, rows_multiple

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        from jobs.packing import pack

        if not features:
            raise ValueError("cannot collate an empty batch")
        _check_positions(features)
        tokens = [{key: _as_list(feature[key]) for key in ("input_ids", "token_type_ids") if key in feature}
                  for feature in features]
        packed = pack(tokens, self.row_len, rows_multiple=self.rows_multiple)
        batch: dict[str, Any] = {"feature_length": packed.pop("feature_length"), **packed}
        for key in LABEL_KEYS:
            if key in features[0]:
                batch[key] = torch.tensor([int(feature[key]) for feature in features], dtype=torch.long)
        return batch


def _check_positions(features: Sequence[Mapping[str, Any]]) -> None:
    """A span label must point inside its own feature's tokens."""
    for feature in features:
        for key in ("start_positions", "end_positions"):
            if key in feature and not 0 <= int(feature[key]) < len(feature["input_ids"]):
                n_tokens = len(feature["input_ids"])
                raise ValueError(f"{key} {int(feature[key])} is outside its feature ({n_tokens} tokens)")


def bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int, megabatch_mult: int = 50,
                     longest_first: bool = True) -> list[list[int]]:
    """Feature indices grouped into batches of similar length; every index exactly once.

    Shuffle, cut into mega-batches of ``batch_size * megabatch_mult``, sort each by
    length (longest first), cut into batches, shuffle the batch order. With
    ``longest_first`` the batch holding the longest feature goes first, so a batch
    that does not fit in memory fails at step 1, not hours later.
    """
    if batch_size < 1 or megabatch_mult < 1:
        raise ValueError("batch_size and megabatch_mult must be at least 1")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    megabatch = batch_size * megabatch_mult
    batches: list[list[int]] = []
    for begin in range(0, len(order), megabatch):
        chunk = sorted(order[begin:begin + megabatch], key=lambda index: lengths[index], reverse=True)
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    if longest_first and batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
    return batches


class BucketBatchSampler:
    """``DataLoader(dataset, batch_sampler=BucketBatchSampler(...), collate_fn=PaddingCollator(...))``:
    a new bucketed order each epoch (``set_epoch``), deterministic in (seed, epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, megabatch_mult: int = 50) -> None:
        self.lengths, self.batch_size, self.seed, self.megabatch_mult = list(lengths), batch_size, seed, megabatch_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        return iter(bucketed_batches(self.lengths, self.batch_size, self.seed + self.epoch, self.megabatch_mult))

    def __len__(self) -> int:
        megabatch = self.batch_size * self.megabatch_mult
        sizes = [min(megabatch, len(self.lengths) - begin) for begin in range(0, len(self.lengths), megabatch)]
        return sum(-(-size // self.batch_size) for size in sizes)
