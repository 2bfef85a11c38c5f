"""SQuAD v2.0 scoring: the project's own implementation of the official metric.

The official evaluation script (``evaluate-v2.0.py``) defines the numbers every
SQuAD v2 paper reports; this module computes the same numbers with the same
rules, without a hub download:

* answers are normalised (lower case, punctuation removed, the articles
  a/an/the removed, whitespace collapsed) before comparison;
* per question, exact match and token-overlap F1 are the maximum over the gold
  answers; an unanswerable question has the single gold answer ``""`` and only
  an empty prediction matches it;
* with ``na_probs`` a prediction counts as empty when its no-answer probability
  is above ``na_prob_thresh`` (default 1.0: never);
* ``best_exact`` / ``best_f1`` (and their thresholds) sweep that threshold over
  the questions sorted by no-answer probability, as the official script does.

A prediction missing for a question scores 0 (and is logged), so ``total`` is
always the number of questions in the data set.

CLI, the official script's interface::

    python -m jobs.tasks.squad_v2 DATA.json PREDICTIONS.json \
        [--na-prob-file NA_PROBS.json] [--na-prob-thresh 1.0] [--out-file OUT.json]
"""

from __future__ import annotations

import collections
import logging
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)

# (question id, has an answer, normalisable gold answer texts)
Question = tuple[str, bool, list[str]]


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def compute_exact(gold: str, prediction: str) -> int:
    """1 when the normalised texts are equal, else 0."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def compute_f1(gold: str, prediction: str) -> float:
    """Token-overlap F1 of the normalised texts (bag of tokens, counts clipped)."""
    gold_tokens = normalize_answer(gold).split()
    pred_tokens = normalize_answer(prediction).split()
    if not gold_tokens or not pred_tokens:
        # An empty side only matches another empty side (no-answer questions).
        return float(gold_tokens == pred_tokens)
    overlap = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _answer_texts(answers: Any) -> list[str]:
    """Gold texts from ``{"text": [...]}`` (flat) or ``[{"text": ...}, ...]`` (official)."""
    if isinstance(answers, Mapping):
        return [str(text) for text in answers.get("text") or []]
    return [str(answer["text"]) for answer in answers or []]


def _question(qid: str, answers: Any) -> Question:
    texts = _answer_texts(answers)
    gold = [text for text in texts if normalize_answer(text)]
    return str(qid), bool(texts), gold or [""]


def questions_from(dataset: Any) -> list[Question]:
    """The questions of an official file (``{"data": [...]}`` or its article list) or of
    flat examples (``[{"id", "answers": {"text": [...]}}]``)."""
    if isinstance(dataset, Mapping) and "data" in dataset:
        dataset = dataset["data"]
    questions: list[Question] = []
    for item in dataset:
        if "paragraphs" in item:
            for paragraph in item["paragraphs"]:
                questions.extend(_question(qa["id"], qa.get("answers", [])) for qa in paragraph["qas"])
        else:
            questions.append(_question(item["id"], item.get("answers", [])))
    return questions


def raw_scores(
    questions: Sequence[Question], predictions: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question exact match and F1 (0 or 1, and 0..1), before any no-answer threshold."""
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    missing = 0
    for qid, _, gold in questions:
        if qid not in predictions:
            missing += 1
            exact[qid] = f1[qid] = 0.0
            continue
        prediction = predictions[qid]
        exact[qid] = float(max(compute_exact(answer, prediction) for answer in gold))
        f1[qid] = max(compute_f1(answer, prediction) for answer in gold)
    if missing:
        logger.warning("%d of %d questions have no prediction; they score 0", missing, len(questions))
    return exact, f1


def apply_no_answer_threshold(
    scores: Mapping[str, float], na_probs: Mapping[str, float], has_answer: Mapping[str, bool], threshold: float
) -> dict[str, float]:
    """Questions whose no-answer probability exceeds ``threshold`` count as predicted empty."""
    return {
        qid: (float(not has_answer[qid]) if na_probs[qid] > threshold else score) for qid, score in scores.items()
    }


def _percent(scores: Mapping[str, float], qids: Sequence[str]) -> float:
    return 100.0 * sum(scores[qid] for qid in qids) / len(qids)


def best_threshold(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    """(best score in percent, its threshold) over all no-answer thresholds.

    Start with every question predicted empty (only the unanswerable ones score),
    then admit questions in increasing order of no-answer probability: an
    answerable one adds its score, an unanswerable one loses its point if the
    model predicted text for it. The threshold is the probability of the last
    question admitted at the best point.
    """
    current = best = float(sum(1 for qid in scores if not has_answer[qid]))
    best_thresh = 0.0
    for qid in sorted(scores, key=lambda q: na_probs[q]):
        if has_answer[qid]:
            current += scores[qid]
        elif predictions.get(qid):
            current -= 1.0
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def score(
    dataset: Any,
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """The official SQuAD v2.0 metrics (percentages), keys in the official order.

    ``dataset``: the official nested data (article list or the whole file) or flat
    examples. ``na_probs``: no-answer probability per question id (0.0 if omitted).
    """
    questions = questions_from(dataset)
    if not questions:
        raise ValueError("the data set has no questions")
    has_answer = {qid: has for qid, has, _ in questions}
    probs = {qid: float((na_probs or {}).get(qid, 0.0)) for qid in has_answer}
    exact_raw, f1_raw = raw_scores(questions, predictions)
    exact = apply_no_answer_threshold(exact_raw, probs, has_answer, na_prob_thresh)
    f1 = apply_no_answer_threshold(f1_raw, probs, has_answer, na_prob_thresh)
    result: dict[str, float] = {}
    for prefix, qids in (
        ("", list(has_answer)),
        ("HasAns_", [q for q, has in has_answer.items() if has]),
        ("NoAns_", [q for q, has in has_answer.items() if not has]),
    ):
        if qids:
            result[f"{prefix}exact"] = _percent(exact, qids)
            result[f"{prefix}f1"] = _percent(f1, qids)
            result[f"{prefix}total"] = len(qids)
    result["best_exact"], result["best_exact_thresh"] = best_threshold(predictions, exact_raw, probs, has_answer)
    result["best_f1"], result["best_f1_thresh"] = best_threshold(predictions, f1_raw, probs, has_answer)
    return result


# ------------------------------------------------------------------ library check


def _load_library_metric() -> Any:
    import evaluate  # compute node only; fails offline (the metric script lives on the hub)

    return evaluate.load("squad_v2")


def evaluate_with_library(
    dataset: Any,
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    load_metric: Callable[[], Any] = _load_library_metric,
    tolerance: float = 1e-6,
) -> dict[str, float]:
    """Our metrics, cross-checked against ``evaluate.load("squad_v2")`` when it loads.

    Ours is the source of truth and is always what is returned; a disagreement is
    logged as a warning, an unavailable library (offline: it raises) as info.
    """
    ours = score(dataset, predictions, na_probs, na_prob_thresh)
    try:
        metric = load_metric()
    except Exception as error:  # noqa: BLE001 - any failure to load means "not available"
        logger.info("evaluate's squad_v2 metric is not available (%s); using ours", error)
        return ours
    questions, probs = questions_from(dataset), na_probs or {}
    theirs = metric.compute(
        predictions=[
            {"id": qid, "prediction_text": predictions.get(qid, ""), "no_answer_probability": probs.get(qid, 0.0)}
            for qid, _, _ in questions
        ],
        references=[
            {"id": qid, "answers": {"text": gold if has else [], "answer_start": [0] * len(gold) if has else []}}
            for qid, has, gold in questions
        ],
        no_answer_threshold=na_prob_thresh,
    )
    differences = {key: (value, theirs.get(key)) for key, value in ours.items()
                   if theirs.get(key) is None or abs(float(theirs[key]) - float(value)) > tolerance}
    if differences:
        logger.warning("evaluate's squad_v2 disagrees with ours (ours, theirs): %s", differences)
    return ours
