"""Task adapters: what differs between SQuAD v2 (extractive QA) and SST-2 (classification).

A task says which model class and head it needs, how raw examples become features
(``jobs.qa_features`` / ``jobs.sst2_features``), how to batch them, and how to turn
the model's outputs on the evaluation split into the task's metrics. The trainer
itself knows nothing task-specific.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasets
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, Trainer

from jobs import qa_features, sst2_features, synthetic
from jobs.contract import SyntheticData, TrainConfig
from jobs.data import Splits, cached_features, load_splits, tokenizer_fingerprint
from jobs.squad_v2_eval import score

SQUAD_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "title": datasets.Value("string"),
    "context": datasets.Value("string"),
    "question": datasets.Value("string"),
    "answers": {"text": datasets.Sequence(datasets.Value("string")),
                "answer_start": datasets.Sequence(datasets.Value("int32"))},
})
# Columns the model does not take: dropped before prediction (the collator ignores them anyway).
_NON_MODEL_COLUMNS = ("example_id", "offset_mapping", "length")


@dataclass(frozen=True)
class PreparedData:
    """Features to train on and the evaluation split (examples and features)."""

    train_features: datasets.Dataset
    eval_examples: datasets.Dataset
    eval_features: datasets.Dataset
    cache_hits: dict[str, bool] = field(default_factory=dict)
    splits: Splits | None = None  # the raw splits: training subset, noise reports, warnings


@dataclass(frozen=True)
class EvalOutput:
    metrics: dict[str, float]
    runtime_s: float
    samples_per_s: float
    postprocess_s: float
    extra: dict[str, Any] = field(default_factory=dict)  # more of result.json's eval section


def _source_hash(module: Any) -> str:
    """Feature code identity: a change to the tokenisation code invalidates the cache."""
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()[:12]


class Task:
    """Base adapter; subclasses fill in the task-specific parts."""

    name = ""
    model_class: Any = None
    head_modules: tuple[str, ...] = ()
    model_kwargs: ClassVar[dict[str, Any]] = {}
    raw_features: datasets.Features | None = None
    feature_module: Any = None

    def write_synthetic(self, folder: Path, data: SyntheticData) -> tuple[Path, Path]:
        raise NotImplementedError

    def tokenize(self, examples: datasets.Dataset, tokenizer: Any, train: TrainConfig, training: bool) -> datasets.Dataset:
        raise NotImplementedError

    def evaluate(self, trainer: Trainer, data: PreparedData, train: TrainConfig, out_dir: Path) -> EvalOutput:
        raise NotImplementedError

    def collator(self, tokenizer: Any, train: TrainConfig) -> qa_features.QACollator:
        """Right padding per batch (to the longest, rounded up to ``pad_to_multiple_of``)."""
        return qa_features.QACollator(tokenizer, pad_to_multiple_of=train.pad_to_multiple_of)

    def feature_key(self, train: TrainConfig, tokenizer: Any, split: str, fingerprint: str) -> dict[str, Any]:
        """Everything the features depend on."""
        return {
            "task": self.name, "split": split, "tokenizer": tokenizer_fingerprint(tokenizer),
            "max_seq_length": train.max_seq_length, "doc_stride": train.doc_stride,
            "pad_to_max_length": train.padding == "max_length", "data": fingerprint,
            "code": _source_hash(self.feature_module),
        }

    def prepare(self, train: TrainConfig, tokenizer: Any, cache_dir: Path) -> PreparedData:
        """Load the raw splits and tokenise them (or reuse the cached features)."""
        splits: Splits = load_splits(train, cache_dir, self.raw_features, self.write_synthetic)
        if len(splits.train) == 0:  # zero-shot: nothing to tokenise (datasets cannot reload a saved empty set)
            train_features, train_hit = datasets.Dataset.from_dict({}), False
        else:
            train_features, train_hit = cached_features(
                splits.train, lambda ds: self.tokenize(ds, tokenizer, train, training=True),
                self.feature_key(train, tokenizer, "train", splits.train_fingerprint), cache_dir, f"{self.name}-train",
            )
        eval_features, eval_hit = cached_features(
            splits.validation, lambda ds: self.tokenize(ds, tokenizer, train, training=False),
            self.feature_key(train, tokenizer, "validation", splits.validation_fingerprint), cache_dir,
            f"{self.name}-validation",
        )
        return PreparedData(train_features, splits.validation, eval_features, {"train": train_hit, "validation": eval_hit},
                            splits)


class SquadV2Task(Task):
    """Extractive QA with unanswerable questions, scored with the official SQuAD v2 metric."""

    name = "squad_v2"
    model_class = AutoModelForQuestionAnswering
    head_modules = ("qa_outputs",)
    raw_features = SQUAD_FEATURES
    feature_module = qa_features

    def write_synthetic(self, folder: Path, data: SyntheticData) -> tuple[Path, Path]:
        train_path, eval_path, _ = synthetic.write_squad_v2(folder, data.n_train, data.n_eval, data.seed,
                                                            data.max_context_words)
        return train_path, eval_path

    def tokenize(self, examples: datasets.Dataset, tokenizer: Any, train: TrainConfig, training: bool) -> datasets.Dataset:
        prepare = qa_features.prepare_train_features if training else qa_features.prepare_eval_features
        return examples.map(
            prepare, batched=True, remove_columns=examples.column_names, keep_in_memory=True,
            fn_kwargs={"tokenizer": tokenizer, "max_seq_length": train.max_seq_length,
                       "doc_stride": train.doc_stride, "pad_to_max_length": train.padding == "max_length"},
            desc="tokenising " + ("train" if training else "validation"),
        )

    def evaluate(self, trainer: Trainer, data: PreparedData, train: TrainConfig, out_dir: Path) -> EvalOutput:
        features = data.eval_features
        model_inputs = features.remove_columns([c for c in _NON_MODEL_COLUMNS if c in features.column_names])
        output = trainer.predict(model_inputs)
        started = time.perf_counter()
        predictions: Any = output.predictions  # (start_logits, end_logits)
        start_logits, end_logits = predictions[0], predictions[1]
        predictions, na_probs, nbest = qa_features.postprocess_qa_predictions(
            data.eval_examples, features, start_logits, end_logits,
            n_best_size=train.n_best_size, max_answer_length=train.max_answer_length,
            null_score_threshold=train.null_score_threshold,
        )
        qa_features.write_predictions(out_dir, predictions, nbest, na_probs)
        metrics = score(data.eval_examples.select_columns(["id", "answers"]).to_list(), predictions, na_probs)
        speed = output.metrics or {}
        return EvalOutput(metrics, speed["test_runtime"], speed["test_samples_per_second"],
                          time.perf_counter() - started)


class Sst2Task(Task):
    """Single-sentence binary classification (GLUE SST-2), scored by accuracy."""

    name = "sst2"
    model_class = AutoModelForSequenceClassification
    head_modules = ("classifier", "pre_classifier")
    model_kwargs: ClassVar[dict[str, Any]] = {"num_labels": 2}
    feature_module = sst2_features

    def write_synthetic(self, folder: Path, data: SyntheticData) -> tuple[Path, Path]:
        return synthetic.write_sst2(folder, data.n_train, data.n_eval, data.seed)

    def tokenize(self, examples: datasets.Dataset, tokenizer: Any, train: TrainConfig, training: bool) -> datasets.Dataset:
        return examples.map(
            sst2_features.prepare_sst2_features, batched=True, remove_columns=examples.column_names,
            keep_in_memory=True,
            fn_kwargs={"tokenizer": tokenizer, "max_seq_length": train.max_seq_length,
                       "pad_to_max_length": train.padding == "max_length"},
            desc="tokenising " + ("train" if training else "validation"),
        )

    def feature_key(self, train: TrainConfig, tokenizer: Any, split: str, fingerprint: str) -> dict[str, Any]:
        key = super().feature_key(train, tokenizer, split, fingerprint)
        del key["doc_stride"]  # no overflow windows for single sentences
        return key

    def evaluate(self, trainer: Trainer, data: PreparedData, train: TrainConfig, out_dir: Path) -> EvalOutput:
        features = data.eval_features
        output = trainer.predict(features.remove_columns([c for c in ("length",) if c in features.column_names]))
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        metrics = sst2_features.accuracy(logits, features["labels"])
        speed = output.metrics or {}
        # What the collapse guard (jobs.health) needs to see a classifier that predicts one class.
        classes = self.model_kwargs["num_labels"]
        extra = {"num_classes": classes, "predicted_classes": sst2_features.class_counts(logits, classes)}
        return EvalOutput(metrics, speed["test_runtime"], speed["test_samples_per_second"], 0.0, extra)


TASKS: dict[str, Task] = {"squad_v2": SquadV2Task(), "sst2": Sst2Task()}
