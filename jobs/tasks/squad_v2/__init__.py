"""SQuAD v2: extractive QA with unanswerable questions, scored with the official SQuAD v2 metric.

``features`` (tokenisation into overflow windows, answer labels), ``postprocess`` (logits ->
answers, n-best lists, no-answer probabilities), ``metric`` (the official scorer, also a CLI)
and ``synthetic`` (a generated data set in the real format).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from jobs.contract import SyntheticData, TrainConfig
from jobs.tasks.base import PreparedData, Task
from jobs.tasks.squad_v2 import features, synthetic
from jobs.tasks.squad_v2.metric import score

if TYPE_CHECKING:
    import datasets


def squad_features() -> datasets.Features:
    """The flat SQuAD v2 schema, explicit: an all-unanswerable file would otherwise infer
    ``answers.text`` as nulls."""
    import datasets

    return datasets.Features({
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {"text": datasets.Sequence(datasets.Value("string")),
                    "answer_start": datasets.Sequence(datasets.Value("int32"))},
    })


def official_rows(path: Path) -> list[dict[str, Any]] | None:
    """Flat rows of an official nested SQuAD v2 file, or None if the file is not one."""
    if path.suffix != ".json":
        return None
    with open(path, encoding="utf-8") as handle:
        if handle.read(1) != "{":
            return None
        handle.seek(0)
        try:
            document = json.load(handle)
        except json.JSONDecodeError:
            return None  # JSON Lines
    if not isinstance(document, dict) or "data" not in document:
        return None
    rows = []
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = qa.get("answers", [])
                rows.append({
                    "id": qa["id"], "title": article.get("title", ""), "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {"text": [a["text"] for a in answers], "answer_start": [a["answer_start"] for a in answers]},
                })
    return rows


class SquadV2Task(Task):
    """Extractive QA with unanswerable questions, scored with the official SQuAD v2 metric."""

    name = "squad_v2"
    required_columns = ("id", "question", "context", "answers")  # ``title`` is optional
    hub_dataset = "squad_v2"
    model_class_name = "AutoModelForQuestionAnswering"
    head_modules = ("qa_outputs",)
    metrics = ("exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
               "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")
    bookkeeping_metrics = ("total", "HasAns_total", "NoAns_total", "best_exact_thresh", "best_f1_thresh")
    primary_metric = "f1"
    metric_labels: ClassVar[dict[str, str]] = {"exact": "EM", "f1": "F1"}
    # F1, and F1 on answerable questions: a model that answers nothing keeps about half its F1 (the
    # unanswerable questions) while its HasAns F1 drops to 0.
    health_metrics = ("f1", "HasAns_f1")
    noise_column = "question"  # never the context: the answers are character spans in it
    overflow_windows = True
    feature_module: ClassVar[ModuleType | None] = features
    non_model_columns = ("example_id", "offset_mapping", "length")
    eval_loss = False  # evaluation features carry offsets, not answer positions

    @property
    def raw_features(self) -> datasets.Features:
        return squad_features()

    def head_parameters(self, hidden: int) -> int:
        return 2 * hidden + 2  # qa_outputs: a start and an end logit a token

    def write_synthetic(self, folder: Path, data: SyntheticData) -> tuple[Path, Path]:
        train_path, eval_path, _ = synthetic.write_squad_v2(folder, data.n_train, data.n_eval, data.seed,
                                                            data.max_context_words)
        return train_path, eval_path

    def strata(self, dataset: datasets.Dataset) -> tuple[list[Any], str]:
        return [bool(answers["text"]) for answers in dataset["answers"]], "answerable"

    def local_rows(self, path: Path) -> list[dict[str, Any]] | None:
        return official_rows(path)

    def tokenize(self, examples: datasets.Dataset, tokenizer: Any, train: TrainConfig,
                 training: bool) -> datasets.Dataset:
        prepare = features.prepare_train_features if training else features.prepare_eval_features
        return examples.map(
            prepare, batched=True, remove_columns=examples.column_names, keep_in_memory=True,
            fn_kwargs={"tokenizer": tokenizer, "max_seq_length": train.max_seq_length,
                       "doc_stride": train.doc_stride, "pad_to_max_length": train.padding == "max_length"},
            desc="tokenising " + ("train" if training else "validation"),
        )

    def score(self, data: PreparedData, predictions: Any, train: TrainConfig,
              out_dir: Path) -> tuple[dict[str, float], dict[str, Any]]:
        from jobs.tasks.squad_v2.postprocess import postprocess_qa_predictions, write_predictions  # numpy

        start_logits, end_logits = predictions[0], predictions[1]
        answers, na_probs, nbest = postprocess_qa_predictions(
            data.eval_examples, data.eval_features, start_logits, end_logits,
            n_best_size=train.n_best_size, max_answer_length=train.max_answer_length,
            null_score_threshold=train.null_score_threshold,
        )
        write_predictions(out_dir, answers, nbest, na_probs)
        return score(data.eval_examples.select_columns(["id", "answers"]).to_list(), answers, na_probs), {}
