"""SQuAD v2 features: tokenisation with overflow, answer labels, batching, post-processing.

Pure functions over dict batches (what ``datasets.Dataset.map(batched=True)`` passes)
and a fast tokenizer; torch is imported only by the collator.

Label alignment, the bug of the seed study's bucketing run: every training feature is
one dict that carries its own ``start_positions`` / ``end_positions`` next to its
``input_ids``. Batches are lists of feature *indices* (``bucketed_batches``); the
collator receives the feature dicts of one batch and pads only the token columns, on
the right, so a label (a token index counted from the left) is never moved and can
never be reordered apart from its tokens.

Token position 0 is the ``[CLS]`` token (BERT-style tokenizers, right padding): it is
the "no answer" label and its logits give the null score.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jobs.contract import NBEST_PREDICTIONS_FILE, NULL_ODDS_FILE, PREDICTIONS_FILE, write_json_atomic

CLS_INDEX = 0
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
LABEL_KEYS = ("start_positions", "end_positions", "labels")

Offsets = Sequence[Sequence[int] | None]


def _column(data: Any, key: str) -> list[Any]:
    """A column of a dict of lists, a ``datasets.Dataset``, or a list of row dicts."""
    if isinstance(data, Mapping) or hasattr(data, "column_names"):
        return list(data[key])
    return [row[key] for row in data]


def _tokenize(examples: Mapping[str, list], tokenizer: Any, max_seq_length: int, doc_stride: int,
              pad_to_max_length: bool) -> Any:
    """Question + context, context truncated into overlapping windows of ``max_seq_length``."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("QA features need a fast tokenizer (offset mappings)")
    encoding = tokenizer(
        [question.lstrip() for question in examples["question"]],  # leading blanks waste the window
        list(examples["context"]),
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if pad_to_max_length else False,
        padding_side="right",
    )
    if encoding["input_ids"] and encoding["input_ids"][0][CLS_INDEX] != tokenizer.cls_token_id:
        raise ValueError("QA features need a tokenizer that puts [CLS] at position 0")
    return encoding


def _base_columns(encoding: Any, examples: Mapping[str, list]) -> dict[str, list]:
    """Model inputs, the feature's example id, and its number of real tokens (``length``)."""
    columns = {key: encoding[key] for key in MODEL_INPUT_KEYS if key in encoding}
    sample_map = encoding["overflow_to_sample_mapping"]
    columns["example_id"] = [examples["id"][sample] for sample in sample_map]
    columns["length"] = [int(sum(mask)) for mask in encoding["attention_mask"]]
    return columns


def _first_answer(answers: Any) -> tuple[int, str] | None:
    """(answer_start, text) of the first gold answer, or None when unanswerable."""
    if isinstance(answers, Mapping):
        texts, starts = answers.get("text") or [], answers.get("answer_start") or []
        return (int(starts[0]), str(texts[0])) if texts else None
    return (int(answers[0]["answer_start"]), str(answers[0]["text"])) if answers else None


def answer_token_span(offsets: Sequence[Sequence[int]], sequence_ids: Sequence[int | None], start_char: int,
                      end_char: int) -> tuple[int, int]:
    """Token indices (start, end) covering characters [start_char, end_char) of the context,
    or (CLS_INDEX, CLS_INDEX) when the answer is not entirely inside this feature's window."""
    context = [i for i, sequence in enumerate(sequence_ids) if sequence == 1]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return CLS_INDEX, CLS_INDEX
    start = max(i for i in context if offsets[i][0] <= start_char)
    end = min(i for i in context if offsets[i][1] >= end_char)
    return start, end


def prepare_train_features(examples: Mapping[str, list], tokenizer: Any, max_seq_length: int, doc_stride: int,
                           pad_to_max_length: bool) -> dict[str, list]:
    """Training features: model inputs, ``start_positions``/``end_positions`` (CLS_INDEX when
    unanswerable or the answer is not fully in the window), ``example_id`` and ``length``.

    Without ``pad_to_max_length`` features are unpadded: the collator pads each batch.
    """
    encoding = _tokenize(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    columns = _base_columns(encoding, examples)
    starts, ends = [], []
    for index, offsets in enumerate(encoding["offset_mapping"]):
        answer = _first_answer(examples["answers"][encoding["overflow_to_sample_mapping"][index]])
        if answer is None:
            start, end = CLS_INDEX, CLS_INDEX
        else:
            start_char, text = answer
            start, end = answer_token_span(offsets, encoding.sequence_ids(index), start_char, start_char + len(text))
        starts.append(start)
        ends.append(end)
    columns["start_positions"], columns["end_positions"] = starts, ends
    return columns


def prepare_eval_features(examples: Mapping[str, list], tokenizer: Any, max_seq_length: int, doc_stride: int,
                          pad_to_max_length: bool) -> dict[str, list]:
    """Evaluation features: model inputs, ``example_id``, ``length`` and ``offset_mapping``
    with None for every token that is not context (question, special tokens, padding)."""
    encoding = _tokenize(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    columns = _base_columns(encoding, examples)
    columns["offset_mapping"] = [
        [list(offset) if sequence == 1 else None for offset, sequence in zip(offsets, encoding.sequence_ids(i))]
        for i, offsets in enumerate(encoding["offset_mapping"])
    ]
    return columns


# ------------------------------------------------------------------ post-processing


def _logit_rows(logits: Any, n_features: int) -> list[np.ndarray]:
    """One 1-D float array a feature from a 2-D array (padded), a list of per-feature
    arrays (ragged), or a list of per-batch 2-D arrays; torch tensors accepted."""
    def as_array(value: Any) -> np.ndarray:
        if hasattr(value, "detach"):
            value = value.detach().float().cpu()
        return np.asarray(value, dtype=np.float64)

    rows: list[np.ndarray] = []
    parts = [logits] if isinstance(logits, np.ndarray) or hasattr(logits, "detach") else logits
    for part in parts:
        array = as_array(part)
        rows.extend(array if array.ndim == 2 else [array])
    if len(rows) != n_features:
        raise ValueError(f"got logits for {len(rows)} features, expected {n_features}")
    return rows


def _top_valid(logits: np.ndarray, valid: np.ndarray, count: int) -> np.ndarray:
    masked = np.where(valid, logits, -np.inf)
    order = np.argsort(-masked, kind="stable")[:count]
    return order[valid[order]]


def _span_candidates(start: np.ndarray, end: np.ndarray, offsets: Offsets, n_best_size: int,
                     max_answer_length: int) -> list[dict[str, Any]]:
    """The best context spans of one feature (both ends in the context, end >= start, not too long)."""
    length = min(len(offsets), len(start), len(end))  # the feature's own length: filler beyond it is ignored
    start, end = start[:length], end[:length]
    valid = np.array([offsets[i] is not None for i in range(length)], dtype=bool)
    candidates = []
    for s in _top_valid(start, valid, n_best_size):
        for e in _top_valid(end, valid, n_best_size):
            if e < s or e - s + 1 > max_answer_length:
                continue
            candidates.append({"start_char": offsets[s][0], "end_char": offsets[e][1],
                               "start_logit": float(start[s]), "end_logit": float(end[e]),
                               "score": float(start[s] + end[e])})
    return candidates


def _sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


def _nbest_entries(context: str, candidates: list[dict[str, Any]], null_score: float,
                   n_best_size: int) -> list[dict[str, Any]]:
    """Top spans plus the null entry, sorted by score, with softmax probabilities."""
    best = sorted(candidates, key=lambda c: c["score"], reverse=True)[:n_best_size]
    entries = [{"text": context[c["start_char"]:c["end_char"]], **c} for c in best]
    entries.append({"text": "", "start_char": -1, "end_char": -1, "start_logit": None, "end_logit": None,
                    "score": null_score})
    entries.sort(key=lambda entry: entry["score"], reverse=True)
    top = entries[0]["score"]
    weights = [math.exp(entry["score"] - top) for entry in entries]
    for entry, weight in zip(entries, weights):
        entry["probability"] = weight / sum(weights)
    return entries


def postprocess_qa_predictions(examples: Any, features: Any, start_logits: Any, end_logits: Any, n_best_size: int,
                               max_answer_length: int, null_score_threshold: float = 0.0
                               ) -> tuple[dict[str, str], dict[str, float], dict[str, list[dict[str, Any]]]]:
    """Predictions, no-answer probabilities and n-best lists, keyed by example id.

    Spans are searched over every feature of an example. The null score is the lowest
    ``start[CLS] + end[CLS]`` over its features; the answer is "" when
    ``null_score - best_span_score > null_score_threshold``. The no-answer probability
    is ``sigmoid(null_score - best_span_score)``: the two-way softmax between "no
    answer" and the best span, so ``na_prob > sigmoid(threshold)`` exactly when the
    prediction is "" (1.0 when no valid span exists).
    """
    example_ids, feature_example_ids = _column(examples, "id"), _column(features, "example_id")
    all_offsets = _column(features, "offset_mapping")
    starts = _logit_rows(start_logits, len(feature_example_ids))
    ends = _logit_rows(end_logits, len(feature_example_ids))
    by_example: dict[str, list[int]] = {}
    for index, example_id in enumerate(feature_example_ids):
        by_example.setdefault(example_id, []).append(index)
    predictions: dict[str, str] = {}
    na_probs: dict[str, float] = {}
    nbest: dict[str, list[dict[str, Any]]] = {}
    for example_id, context in zip(example_ids, _column(examples, "context")):
        null_score, candidates = math.inf, []
        for index in by_example.get(example_id, []):
            null_score = min(null_score, float(starts[index][CLS_INDEX] + ends[index][CLS_INDEX]))
            candidates += _span_candidates(starts[index], ends[index], all_offsets[index], n_best_size,
                                           max_answer_length)
        if not candidates:
            predictions[example_id], na_probs[example_id] = "", 1.0
            nbest[example_id] = _nbest_entries(context, [], 0.0 if math.isinf(null_score) else null_score, 0)
            continue
        entries = _nbest_entries(context, candidates, null_score, n_best_size)
        best = next(entry for entry in entries if entry["start_char"] >= 0)
        difference = null_score - best["score"]
        predictions[example_id] = "" if difference > null_score_threshold else best["text"]
        na_probs[example_id] = _sigmoid(difference)
        nbest[example_id] = entries
    return predictions, na_probs, nbest


def write_predictions(out_dir: Path | str, predictions: Mapping[str, str], nbest: Mapping[str, list],
                      na_probs: Mapping[str, float]) -> dict[str, Path]:
    """Write predictions.json, nbest_predictions.json and null_odds.json (the no-answer
    probabilities: usable as the scorer's ``--na-prob-file``), each atomically."""
    out = Path(out_dir)
    paths = {"predictions": out / PREDICTIONS_FILE, "nbest": out / NBEST_PREDICTIONS_FILE,
             "null_odds": out / NULL_ODDS_FILE}
    write_json_atomic(paths["predictions"], dict(predictions))
    write_json_atomic(paths["nbest"], {key: list(value) for key, value in nbest.items()})
    write_json_atomic(paths["null_odds"], {key: float(value) for key, value in na_probs.items()})
    return paths


# ------------------------------------------------------------------------- batching


def _as_list(value: Any) -> list[Any]:
    return value.tolist() if hasattr(value, "tolist") else list(value)


class QACollator:
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
    """``DataLoader(dataset, batch_sampler=BucketBatchSampler(...), collate_fn=QACollator(...))``:
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
