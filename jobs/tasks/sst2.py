"""SST-2 (GLUE): single-sentence binary sentiment classification, scored by accuracy.

``prepare_sst2_features`` tokenises a dict batch (``sentence``, ``label``) into model
inputs, ``labels`` and ``length`` (real tokens, for bucketing); without
``pad_to_max_length`` features stay unpadded and ``jobs.tasks.batching.PaddingCollator``
pads each batch. ``accuracy`` is in percent, like the SQuAD metrics and the seed studies'
tables. ``generate_sst2`` writes a learnable data set in the real format: lower-cased
movie-review sentences whose label follows the majority of positive or negative words,
with varied lengths and 5% label noise (``sst2_train.jsonl``, ``sst2_eval.jsonl``:
{idx, sentence, label}).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from jobs.contract import SyntheticData, TrainConfig
from jobs.tasks.base import PreparedData, Task, write_jsonl
from jobs.tasks.batching import MODEL_INPUT_KEYS

if TYPE_CHECKING:
    import datasets

NUM_CLASSES = 2  # 0 negative, 1 positive

# ------------------------------------------------------------------------- features and metric


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


def class_ids(predictions: Any, labels: Sequence[int] | Any) -> tuple[Any, Any]:
    """(predicted, gold) integer class-id arrays of one shape, from class ids (1-D) or logits (2-D: argmax
    over the last axis). Raises ValueError when their shapes differ or there are none."""
    import numpy as np  # here: the login node reads this module's declarations, and numpy costs its startup

    predicted = np.asarray(predictions)
    if predicted.ndim == 2:
        predicted = predicted.argmax(axis=-1)
    gold = np.asarray(labels)
    if predicted.shape != gold.shape or gold.size == 0:
        raise ValueError(f"need as many predictions as labels (got {predicted.shape} and {gold.shape})")
    return predicted.astype(int), gold.astype(int)


def accuracy(predictions: Any, labels: Sequence[int] | Any) -> dict[str, float]:
    """``{"accuracy": percent}`` from class ids (1-D) or logits (2-D: argmax over the last axis)."""
    predicted, gold = class_ids(predictions, labels)
    return {"accuracy": 100.0 * float((predicted == gold).mean())}


def class_counts(predictions: Any, num_classes: int) -> dict[str, int]:
    """``{"0": n0, "1": n1, ...}``: how often each class id was predicted (logits: argmax)."""
    import numpy as np

    predicted = np.asarray(predictions)
    if predicted.ndim == 2:
        predicted = predicted.argmax(axis=-1)
    counts = np.bincount(predicted.astype(int).ravel(), minlength=num_classes)
    return {str(label): int(count) for label, count in enumerate(counts)}


# ------------------------------------------------------------------------- generated data


_POSITIVE = ("wonderful", "moving", "brilliant", "charming", "delightful", "superb", "heartfelt", "funny",
             "gripping", "beautiful", "warm", "clever", "touching", "smart", "engaging")
_NEGATIVE = ("dull", "tedious", "clumsy", "boring", "awful", "lifeless", "predictable", "shallow",
             "bland", "painful", "messy", "tiresome", "flat", "forgettable", "incoherent")
_SUBJECTS = ("the film", "this movie", "the director 's latest", "the script", "the cast", "the story",
             "the final act", "the performances", "this thriller", "the comedy")
_CLAUSES = ("for most of its running time", "in its second half", "despite a familiar premise",
            "from the opening scene", "by any measure", "as the plot unfolds", "in a crowded season")


def _sst2_sentence(rng: random.Random, positive: bool) -> str:
    main, other = (_POSITIVE, _NEGATIVE) if positive else (_NEGATIVE, _POSITIVE)
    adjectives = rng.sample(main, rng.randint(1, 3))
    words = [rng.choice(_SUBJECTS), "is", " and ".join(adjectives)]
    words += [rng.choice(_CLAUSES) for _ in range(rng.choices([0, 1, 2, 4], weights=[35, 35, 20, 10])[0])]
    if rng.random() < 0.25:  # a weaker contrary note: the majority still decides
        words += [", though at times", rng.choice(other)]
    return " ".join(words) + " ."


def generate_sst2(n: int, seed: int, split: str = "train", label_noise: float = 0.05) -> list[dict[str, Any]]:
    """``n`` SST-2 rows {idx, sentence, label} (1 positive, 0 negative), balanced, with
    ``label_noise`` of the labels flipped. Deterministic in (seed, split)."""
    rng = random.Random(f"sst2:{seed}:{split}")
    rows = []
    for idx in range(n):
        positive = rng.random() < 0.5
        sentence = _sst2_sentence(rng, positive)
        label = int(positive) ^ int(rng.random() < label_noise)
        rows.append({"idx": idx, "sentence": sentence, "label": label})
    return rows


def write_sst2(path_dir: Path | str, n_train: int, n_eval: int, seed: int) -> tuple[Path, Path]:
    """Write sst2_train.jsonl and sst2_eval.jsonl; return their paths."""
    out = Path(path_dir)
    return (
        write_jsonl(out / "sst2_train.jsonl", generate_sst2(n_train, seed, split="train")),
        write_jsonl(out / "sst2_eval.jsonl", generate_sst2(n_eval, seed, split="eval")),
    )


# ------------------------------------------------------------------------- the task


class Sst2Task(Task):
    """Single-sentence binary classification (GLUE SST-2), scored by accuracy."""

    name = "sst2"
    required_columns = ("sentence", "label")
    hub_dataset = "glue/sst2"
    model_class_name = "AutoModelForSequenceClassification"
    head_modules = ("classifier", "pre_classifier")
    metrics = ("accuracy",)
    primary_metric = "accuracy"
    metric_labels: ClassVar[dict[str, str]] = {"accuracy": "accuracy"}
    num_classes = NUM_CLASSES
    noise_column = "sentence"

    def head_parameters(self, hidden: int) -> int:
        # the pooler / pre_classifier (hidden x hidden) and the classifier (hidden x classes)
        return hidden * hidden + hidden + (hidden + 1) * NUM_CLASSES

    def write_synthetic(self, folder: Path, data: SyntheticData) -> tuple[Path, Path]:
        return write_sst2(folder, data.n_train, data.n_eval, data.seed)

    def strata(self, dataset: datasets.Dataset) -> tuple[list[Any], str]:
        return list(dataset["label"]), "label"

    def tokenize(self, examples: datasets.Dataset, tokenizer: Any, train: TrainConfig,
                 training: bool) -> datasets.Dataset:
        return examples.map(
            prepare_sst2_features, batched=True, remove_columns=examples.column_names, keep_in_memory=True,
            fn_kwargs={"tokenizer": tokenizer, "max_seq_length": train.max_seq_length,
                       "pad_to_max_length": train.padding == "max_length"},
            desc="tokenising " + ("train" if training else "validation"),
        )

    def score(self, data: PreparedData, predictions: Any, train: TrainConfig,
              out_dir: Path) -> tuple[dict[str, float], dict[str, Any]]:
        logits = predictions[0] if isinstance(predictions, tuple) else predictions
        # What the collapse guard (jobs.health) needs to see a classifier that predicts one class.
        extra = {"num_classes": NUM_CLASSES, "predicted_classes": class_counts(logits, NUM_CLASSES)}
        return accuracy(logits, data.eval_features["labels"]), extra
