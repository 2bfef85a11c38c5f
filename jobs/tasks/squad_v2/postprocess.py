"""SQuAD v2 post-processing: start/end logits of the features -> one answer an example.

Spans are searched over every feature (overflow window) of an example; the null score
(no answer) comes from the ``[CLS]`` token at ``CLS_INDEX``. The n-best lists and the
no-answer probabilities are written next to the predictions (``write_predictions``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jobs.contract import NBEST_PREDICTIONS_FILE, NULL_ODDS_FILE, PREDICTIONS_FILE, write_json_atomic
from jobs.tasks.squad_v2.features import CLS_INDEX

Offsets = Sequence[Sequence[int] | None]


def _column(data: Any, key: str) -> list[Any]:
    """A column of a dict of lists, a ``datasets.Dataset``, or a list of row dicts."""
    if isinstance(data, Mapping) or hasattr(data, "column_names"):
        return list(data[key])
    return [row[key] for row in data]


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
