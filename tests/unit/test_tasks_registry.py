"""The tasks registry: a task is one module, and the login node reads it without torch.

``WordCountTask`` below is a whole task in this file: registered with one line, it goes
through generated data, the subset draw, tokenisation, the feature cache, batching,
post-processing and scoring, and the login node's column check and primary metric,
without any other change.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jobs.contract import SyntheticData, TrainConfig
from jobs.tasks import TASKS, PreparedData, Task, chance_metrics, get_task, primary_metrics
from jobs.tasks.base import write_jsonl

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = 3


class WordCountTask(Task):
    """Toy classification: the label is the number of words of ``text`` modulo 3."""

    name = "word_count"
    required_columns = ("text", "label")
    hub_dataset = "none/word_count"
    model_class_name = "AutoModelForSequenceClassification"
    head_modules = ("classifier",)
    metrics = ("hit_rate",)
    primary_metric = "hit_rate"  # a name no built-in task uses: collect must read it from here
    num_classes = CLASSES
    noise_column = "text"

    def head_parameters(self, hidden: int) -> int:
        return (hidden + 1) * CLASSES

    def write_synthetic(self, folder: Path, data: SyntheticData) -> tuple[Path, Path]:
        def rows(n: int, offset: int) -> list[dict[str, Any]]:
            return [{"text": " ".join(["w"] * (1 + (i + offset) % 7)), "label": (1 + (i + offset) % 7) % CLASSES}
                    for i in range(n)]

        return (write_jsonl(folder / f"{self.name}_train.jsonl", rows(data.n_train, data.seed)),
                write_jsonl(folder / f"{self.name}_eval.jsonl", rows(data.n_eval, data.seed + 1)))

    def strata(self, dataset: Any) -> tuple[list[Any], str]:
        return list(dataset["label"]), "label"

    def tokenize(self, examples: Any, tokenizer: Any, train: TrainConfig, training: bool) -> Any:
        def encode(batch: dict[str, list]) -> dict[str, list]:
            encoding = tokenizer(batch["text"])
            return {**encoding, "labels": batch["label"], "length": [len(ids) for ids in encoding["input_ids"]]}

        return examples.map(encode, batched=True, remove_columns=examples.column_names, keep_in_memory=True)

    def score(self, data: PreparedData, predictions: Any, train: TrainConfig,
              out_dir: Path) -> tuple[dict[str, float], dict[str, Any]]:
        predicted = predictions.argmax(axis=-1)
        gold = data.eval_features["labels"]
        hits = sum(int(p == g) for p, g in zip(predicted, gold))
        return {"hit_rate": 100.0 * hits / len(gold)}, {"num_classes": CLASSES}


class WordTokenizer:
    """A whitespace tokenizer with the few attributes the generic parts read."""

    name_or_path = "word-tokenizer"
    pad_token_id = 0
    pad_token_type_id = 0

    def get_vocab(self) -> dict[str, int]:
        return {"[PAD]": 0, "[CLS]": 1, "w": 2}

    def __call__(self, texts: list[str]) -> dict[str, list[list[int]]]:
        ids = [[1] + [2] * len(text.split()) for text in texts]
        return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]}


@pytest.fixture()
def word_count(monkeypatch: pytest.MonkeyPatch) -> Task:
    task = WordCountTask()
    monkeypatch.setitem(TASKS, task.name, task)  # the one registry line
    return task


def toy_config(**data: Any) -> TrainConfig:
    # The contract's task field is a closed list of the shipped tasks: the toy task is set past it.
    train = TrainConfig.model_validate({"task": "sst2", "max_seq_length": 32,
                                        "data": {"synthetic": {"n_train": 42, "n_eval": 14}, **data}})
    return train.model_copy(update={"task": "word_count"})


def test_importing_the_registry_imports_no_torch_transformers_or_datasets() -> None:
    """Nor numpy: the login node's commands read the declarations, and numpy costs their startup."""
    code = ("import sys, jobs.tasks\n"
            "print([m for m in ('torch', 'transformers', 'datasets', 'peft', 'numpy') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          check=False, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.replace("'", '"')) == []


def test_every_task_declares_what_the_others_read(tmp_path: Path) -> None:
    contract_names = typing.get_args(TrainConfig.model_fields["task"].annotation)
    assert set(contract_names) == set(TASKS), "a task registered in jobs.tasks must be a value of TrainConfig.task"
    assert primary_metrics() == ("f1", "accuracy", "matthews_correlation", "pearson")
    assert chance_metrics() == {"accuracy"}
    for name, task in TASKS.items():
        assert task.name == name and task.primary_metric in task.metrics and task.required_columns
        assert task.model_class_name.startswith("AutoModelFor") and task.head_modules and task.hub_dataset
        assert task.noise_column in task.required_columns
        train_path, eval_path = task.write_synthetic(tmp_path / name, SyntheticData(n_train=6, n_eval=3))
        for path in (train_path, eval_path):
            first = json.loads(path.read_text().splitlines()[0])
            assert set(task.required_columns) <= set(first), (name, path)
    from jobs.tasks.squad_v2.metric import score
    from jobs.tasks.squad_v2.synthetic import generate_squad_v2

    examples = generate_squad_v2(30, 0)
    assert tuple(score(examples, {e["id"]: "" for e in examples})) == TASKS["squad_v2"].metrics
    assert TASKS["sst2"].chance_level == 50.0 and TASKS["squad_v2"].chance_level is None
    assert TASKS["squad_v2"].overflow_windows and not TASKS["sst2"].overflow_windows


def test_an_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown task 'sst3': known tasks are cola, mnli, mrpc, qnli, qqp, rte, squad_v2, sst2, stsb"):
        get_task("sst3")


def test_a_task_is_one_module(word_count: Task, tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    pytest.importorskip("torch")
    from jobs.tasks.data import load_splits

    train = toy_config(max_train_samples=21)
    splits = load_splits(train, tmp_path, get_task("word_count"))
    assert splits.subset is not None and splits.subset.strategy == "stratified:label"  # the toy's strata
    assert len(splits.train) == 21 and len(splits.validation) == 14
    data = word_count.prepare(train, WordTokenizer(), tmp_path)
    assert data.cache_hits == {"train": False, "validation": False}
    assert word_count.prepare(train, WordTokenizer(), tmp_path).cache_hits == {"train": True, "validation": True}

    batch = word_count.collator(WordTokenizer(), train)([data.train_features[i] for i in range(5)])
    assert batch["labels"].tolist() == data.train_features["labels"][:5]
    assert batch["attention_mask"].sum(dim=1).tolist() == data.train_features["length"][:5]

    import numpy as np

    gold = np.array(data.eval_features["labels"])
    logits = np.eye(CLASSES)[gold]  # a perfect model
    seen: list[list[str]] = []

    def predict(features: Any) -> SimpleNamespace:
        seen.append(features.column_names)
        return SimpleNamespace(predictions=logits, metrics={"test_runtime": 0.5, "test_samples_per_second": 28.0})

    output = word_count.evaluate(SimpleNamespace(predict=predict), data, train, tmp_path)  # type: ignore[arg-type]
    assert output.metrics == {"hit_rate": 100.0} and output.extra == {"num_classes": CLASSES}
    assert output.runtime_s == 0.5 and "length" not in seen[0]


@pytest.mark.parametrize("metrics", [{"accuracy": 50.0}, {"hit_rate": 50.0, "accuracy": 50.0}])
def test_a_score_without_the_primary_metric_or_with_an_undeclared_one_is_refused(
        metrics: dict[str, float], word_count: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(word_count, "score", lambda *args: (metrics, {}))
    data = SimpleNamespace(eval_features=SimpleNamespace(column_names=["input_ids"], remove_columns=lambda c: None))
    trainer = SimpleNamespace(predict=lambda f: SimpleNamespace(predictions=None, metrics={}))
    with pytest.raises(ValueError, match=r"must return its primary metric 'hit_rate' and only its declared metrics "
                                         r"\['hit_rate'\]"):
        word_count.evaluate(trainer, data, toy_config(), tmp_path)  # type: ignore[arg-type]


def test_the_login_node_reads_a_new_task_from_the_registry(word_count: Task, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    from orchestrator.collect.analysis import primary_metric
    from orchestrator.matrix import preflight

    no_label = tmp_path / "train.jsonl"
    no_label.write_text('{"text": "w w"}\n')
    problems = preflight.data_problems(toy_config(synthetic=None, train_file=str(no_label),
                                                  validation_file=str(no_label)), "runs.T1")
    assert problems[0] == ("runs.T1.data.train_file", problems[0][1]) and "has no label column" in problems[0][1]
    runs = pd.DataFrame({"train.task": ["word_count"], "metrics.hit_rate": [40.0], "metrics.accuracy": [40.0]})
    assert primary_metric(runs) == "hit_rate"
    assert "hit_rate" in chance_metrics()
