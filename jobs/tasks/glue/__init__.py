"""GLUE: sentence and sentence-pair classification (and STS-B's regression), one class for all.

``GlueTask`` is parameterised by class attributes: ``text_columns`` (one: a sentence; two: a
pair, tokenised as a pair so BERT-like models see ``token_type_ids``), ``num_classes`` (None:
a regression, one output, float labels, mean squared error), ``metrics`` (names of
``jobs.tasks.glue.metrics.METRICS``) with a ``primary_metric``, and the hub data set
``glue/<name>``. Each task below is one such declaration:

========  ======================  =========  ===============================  ===============
task      text columns            classes    metrics (percent)                primary
========  ======================  =========  ===============================  ===============
cola      sentence                2          matthews_correlation, accuracy   matthews_corr.
mrpc      sentence1, sentence2    2          f1, accuracy                     f1
qqp       question1, question2    2          f1, accuracy                     f1
rte       sentence1, sentence2    2          accuracy                         accuracy
qnli      question, sentence      2          accuracy                         accuracy
mnli      premise, hypothesis     3          accuracy, accuracy_mismatched    accuracy
stsb      sentence1, sentence2    regression pearson, spearman                pearson
========  ======================  =========  ===============================  ===============

(SST-2 stays its own module, ``jobs.tasks.sst2``.) MNLI is evaluated on ``validation_matched``;
with hub data its ``validation_mismatched`` split is scored too, as ``accuracy_mismatched``;
local files and generated data have no mismatched set, so that metric is absent and the
result's eval section says why (``unmeasured``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from jobs.contract import SyntheticData, TrainConfig, hub_dataset
from jobs.tasks.base import EvalOutput, PreparedData, Task, write_jsonl
from jobs.tasks.batching import MODEL_INPUT_KEYS
from jobs.tasks.glue import metrics as glue_metrics
from jobs.tasks.glue.synthetic import generate_pair, generate_regression, generate_single

if TYPE_CHECKING:
    import datasets
    from transformers import Trainer


def prepare_glue_features(examples: Mapping[str, list], tokenizer: Any, text_columns: tuple[str, ...],
                          max_seq_length: int, pad_to_max_length: bool, regression: bool) -> dict[str, list]:
    """Model inputs, ``labels`` (class ids, or float scores for a regression) and ``length`` (real
    tokens) for a batch; two text columns go in as a pair ([CLS] a [SEP] b [SEP], token_type_ids 0 then
    1), truncated longest-first to ``max_seq_length``."""
    texts = [list(examples[column]) for column in text_columns]
    encoding = tokenizer(*texts, truncation=True, max_length=max_seq_length,
                         padding="max_length" if pad_to_max_length else False, padding_side="right")
    columns = {key: encoding[key] for key in MODEL_INPUT_KEYS if key in encoding}
    columns["labels"] = [float(label) if regression else int(label) for label in examples["label"]]
    columns["length"] = [int(sum(mask)) for mask in encoding["attention_mask"]]
    return columns


class GlueTask(Task):
    """A GLUE task: the declarations below, set by each subclass; everything else is shared.

    ``text_columns``: one or two; ``label_ids``: (generated pairs' relation, label id) pairs (GLUE's own
    ids: MRPC 1 = equivalent, RTE/QNLI 0 = entailment); ``question_first``: generated pairs start
    with a question; ``hub_eval_split``: the hub split scored; ``mismatched_split``: a second hub
    split scored under ``<metric>_mismatched`` (MNLI)."""

    text_columns: ClassVar[tuple[str, ...]] = ()
    label_ids: ClassVar[tuple[tuple[str, int], ...]] = ()
    question_first: ClassVar[bool] = False
    mismatched_split: ClassVar[str | None] = None
    model_class_name = "AutoModelForSequenceClassification"
    head_modules = ("classifier", "pre_classifier")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.required_columns = (*cls.text_columns, "label")
        cls.hub_dataset = f"glue/{cls.name}"
        cls.noise_column = cls.text_columns[0] if cls.text_columns else ""
        cls.primary_at_chance = cls.primary_metric == "accuracy"  # chance is 0 for Matthews correlation, not 50

    @property
    def regression(self) -> bool:
        return self.num_classes is None

    @property
    def model_kwargs(self) -> dict[str, Any]:
        # one output and MSE; transformers infers the same from num_labels == 1 and float labels,
        # but saying it keeps an int-looking score column from turning it into a classifier
        if self.regression:
            return {"num_labels": 1, "problem_type": "regression"}
        return {"num_labels": self.num_classes, "problem_type": "single_label_classification"}

    def head_parameters(self, hidden: int) -> int:
        # the pooler / pre_classifier (hidden x hidden) and the classifier (hidden x outputs)
        return hidden * hidden + hidden + (hidden + 1) * (self.num_classes or 1)

    def write_synthetic(self, folder: Path, data: SyntheticData) -> tuple[Path, Path]:
        paths = []
        for split, n in (("train", data.n_train), ("eval", data.n_eval)):
            if self.regression:
                rows = generate_regression(n, data.seed, split)
            elif len(self.text_columns) == 1:
                rows = generate_single(n, data.seed, split)
            else:
                first, second = self.text_columns
                rows = generate_pair(n, data.seed, split, (first, second), dict(self.label_ids),
                                     self.question_first)
            paths.append(write_jsonl(Path(folder) / f"{self.name}_{split}.jsonl", rows))
        return paths[0], paths[1]

    def strata(self, dataset: datasets.Dataset) -> tuple[list[Any], str]:
        if self.regression:  # whole points of the 0-5 similarity score
            return [round(float(score)) for score in dataset["label"]], "label (score rounded)"
        return list(dataset["label"]), "label"

    def tokenize(self, examples: datasets.Dataset, tokenizer: Any, train: TrainConfig,
                 training: bool) -> datasets.Dataset:
        return examples.map(
            prepare_glue_features, batched=True, remove_columns=examples.column_names, keep_in_memory=True,
            fn_kwargs={"tokenizer": tokenizer, "text_columns": self.text_columns,
                       "max_seq_length": train.max_seq_length, "pad_to_max_length": train.padding == "max_length",
                       "regression": self.regression},
            desc="tokenising " + ("train" if training else "validation"),
        )

    @property
    def curve_metrics(self) -> tuple[str, ...]:
        """An evaluation during training scores the matched set only: MNLI's ``_mismatched`` copies are not
        among them (early_stopping on one is refused at submit)."""
        return tuple(name for name in super().curve_metrics if not name.endswith("_mismatched"))

    def _metrics_names(self) -> tuple[str, ...]:
        """The metrics scored on one evaluation set (the declared ones but the ``_mismatched`` copies)."""
        return tuple(name for name in self.metrics if not name.endswith("_mismatched"))

    def _metrics(self, predictions: Any, labels: Any, suffix: str = "") -> dict[str, float]:
        return glue_metrics.score(self._metrics_names(), predictions, labels, suffix)

    def score(self, data: PreparedData, predictions: Any, train: TrainConfig,
              out_dir: Path) -> tuple[dict[str, float], dict[str, Any]]:
        from jobs.tasks.sst2 import class_counts

        outputs = predictions[0] if isinstance(predictions, tuple) else predictions
        metrics = self._metrics(outputs, data.eval_features["labels"])
        extra: dict[str, Any] = {}
        undefined = [name for name, value in metrics.items() if math.isnan(value)]
        if undefined:  # null in result.json (NaN is not JSON) and named, never 0
            extra["unmeasured"] = {name: "constant predictions or labels: the correlation is undefined"
                                   for name in undefined}
            metrics.update(dict.fromkeys(undefined, cast(float, None)))
        if self.regression:
            return metrics, extra
        # What the collapse guard (jobs.health) needs to see a classifier that predicts one class.
        assert self.num_classes is not None
        return metrics, {**extra, "num_classes": self.num_classes,
                         "predicted_classes": class_counts(outputs, self.num_classes)}

    def evaluate(self, trainer: Trainer, data: PreparedData, train: TrainConfig, out_dir: Path,
                 during_training: bool = False) -> EvalOutput:
        """The evaluation set's metrics; for MNLI after training also the mismatched split's (hub data only).
        An evaluation during training scores ``data`` alone: its validation line would otherwise re-tokenise
        the mismatched split each time, and its training-sample line would carry a figure of that split."""
        output = super().evaluate(trainer, data, train, out_dir, during_training)
        if self.mismatched_split is None or during_training:
            return output
        if train.data.name is None:
            output.extra["unmeasured"] = {f"{m}_mismatched": "local files and generated data have no mismatched "
                                          "evaluation set (hub data only)" for m in self._metrics_names()}
            return output
        import datasets

        rows = datasets.load_dataset(*hub_dataset(train.data.name, train.data.config))[self.mismatched_split]
        if train.data.max_eval_samples is not None:
            rows = rows.select(range(min(train.data.max_eval_samples, len(rows))))
        features = self.tokenize(rows, trainer.processing_class, train, training=False)
        predicted = trainer.predict(features.remove_columns([c for c in self.non_model_columns
                                                             if c in features.column_names]))
        outputs = predicted.predictions[0] if isinstance(predicted.predictions, tuple) else predicted.predictions
        output.metrics.update(self._metrics(outputs, features["labels"], suffix="_mismatched"))
        return output


class ColaTask(GlueTask):
    """CoLA: is a sentence grammatically acceptable (1) or not (0)."""

    name = "cola"
    text_columns = ("sentence",)
    num_classes = 2
    metrics = ("matthews_correlation", "accuracy")
    primary_metric = "matthews_correlation"


class MrpcTask(GlueTask):
    """MRPC: is sentence2 a paraphrase of sentence1 (1) or not (0)."""

    name = "mrpc"
    text_columns = ("sentence1", "sentence2")
    num_classes = 2
    label_ids = (("same", 1), ("different", 0))
    metrics = ("f1", "accuracy")
    primary_metric = "f1"


class QqpTask(GlueTask):
    """QQP: do two questions ask the same (1, duplicate) or not (0)."""

    name = "qqp"
    text_columns = ("question1", "question2")
    num_classes = 2
    label_ids = (("same", 1), ("different", 0))
    question_first = True
    metrics = ("f1", "accuracy")
    primary_metric = "f1"


class RteTask(GlueTask):
    """RTE: does sentence1 entail sentence2 (0) or not (1)."""

    name = "rte"
    text_columns = ("sentence1", "sentence2")
    num_classes = 2
    label_ids = (("same", 0), ("different", 1))
    metrics = ("accuracy",)
    primary_metric = "accuracy"


class QnliTask(GlueTask):
    """QNLI: does the sentence answer the question (0, entailment) or not (1)."""

    name = "qnli"
    text_columns = ("question", "sentence")
    num_classes = 2
    label_ids = (("same", 0), ("different", 1))
    question_first = True
    metrics = ("accuracy",)
    primary_metric = "accuracy"


class MnliTask(GlueTask):
    """MNLI: premise -> hypothesis is entailment (0), neutral (1) or contradiction (2)."""

    name = "mnli"
    text_columns = ("premise", "hypothesis")
    num_classes = 3
    label_ids = (("same", 0), ("different", 1), ("contradiction", 2))
    metrics = ("accuracy", "accuracy_mismatched")
    primary_metric = "accuracy"
    hub_eval_split = "validation_matched"
    mismatched_split = "validation_mismatched"


class StsbTask(GlueTask):
    """STS-B: how similar two sentences are, a score from 0 to 5 (regression)."""

    name = "stsb"
    text_columns = ("sentence1", "sentence2")
    num_classes = None
    metrics = ("pearson", "spearman")
    primary_metric = "pearson"


GLUE_TASKS: tuple[GlueTask, ...] = (ColaTask(), MrpcTask(), QqpTask(), RteTask(), QnliTask(), MnliTask(), StsbTask())
