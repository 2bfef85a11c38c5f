"""SQuAD v2 features: question + context tokenised with overflow windows, answer labels.

Pure functions over dict batches (what ``datasets.Dataset.map(batched=True)`` passes)
and a fast tokenizer. Every training feature carries its own ``start_positions`` /
``end_positions`` next to its ``input_ids``; ``jobs.tasks.batching`` pads only on the
right, so those token indices never move.

Token position 0 is the ``[CLS]`` token (BERT-style tokenizers, right padding): it is
the "no answer" label and its logits give the null score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobs.tasks.batching import MODEL_INPUT_KEYS

CLS_INDEX = 0


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
