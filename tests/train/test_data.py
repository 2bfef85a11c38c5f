"""Local data files in the real formats go through the same loading code as the hub's."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobs.contract import TrainConfig
from jobs.tasks.data import load_local_file
from jobs.tasks.squad_v2 import squad_features
from jobs.tasks.squad_v2.synthetic import generate_squad_v2, write_squad_v2
from jobs.tasks.sst2 import generate_sst2
from jobs.trainer import run_training

SQUAD_FEATURES = squad_features()

pytestmark = pytest.mark.train


def test_squad_v2_from_json_lines_and_the_official_nested_file(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any, tmp_path: Path
) -> None:
    train_path, _, official_path = write_squad_v2(tmp_path / "files", n_train=30, n_eval=10, seed=2)
    train = tiny(data={"synthetic": None, "train_file": str(train_path), "validation_file": str(official_path)})
    result = run_training(spec_for(train, "local"), run_dir_for("local"))
    assert result["data"]["eval_examples"] == 10
    assert result["metrics"]["total"] == 10
    assert json.loads((run_dir_for("local").path / "null_odds.json").read_text()).keys() == \
        json.loads((run_dir_for("local").path / "predictions.json").read_text()).keys()


def test_an_all_unanswerable_file_keeps_its_answer_types(tmp_path: Path) -> None:
    rows = [example for example in generate_squad_v2(40, 4) if not example["answers"]["text"]][:3]
    path = tmp_path / "no_answers.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_local_file(path, SQUAD_FEATURES, tmp_path)
    assert dataset.features["answers"] == SQUAD_FEATURES["answers"]
    assert dataset[0]["answers"] == {"text": [], "answer_start": []}


def test_sst2_from_csv(tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any, tmp_path: Path) -> None:
    paths = []
    for split, n in (("train", 24), ("eval", 8)):
        path = tmp_path / f"sst2_{split}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["sentence", "label"])
            writer.writeheader()
            writer.writerows({"sentence": r["sentence"], "label": r["label"]} for r in generate_sst2(n, 1, split))
        paths.append(path)
    train = tiny(task="sst2", data={"synthetic": None, "train_file": str(paths[0]), "validation_file": str(paths[1])})
    result = run_training(spec_for(train, "csv"), run_dir_for("csv"))
    assert set(result["metrics"]) == {"accuracy"}
    assert result["data"]["eval_features"] == 8


def test_a_missing_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_local_file(tmp_path / "nowhere.jsonl", SQUAD_FEATURES, tmp_path)


@pytest.mark.parametrize(("name", "expected"), [("glue/sst2", ("glue", "sst2")), ("squad_v2", ("squad_v2", None))])
def test_hub_names_go_to_load_dataset(name: str, expected: tuple[str, str | None], tiny: Callable[..., TrainConfig],
                                      spec_for: Any, run_dir_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub name is what a real cluster uses; here the hub is replaced by generated data."""
    import datasets

    calls = []
    task = "sst2" if name.startswith("glue") else "squad_v2"
    generate = generate_sst2 if task == "sst2" else generate_squad_v2
    features = None if task == "sst2" else SQUAD_FEATURES

    def fake_load_dataset(path: str, config: str | None = None, **kwargs: Any) -> datasets.DatasetDict:
        calls.append((path, config))
        return datasets.DatasetDict({split: datasets.Dataset.from_list(generate(n, 0, split), features=features)
                                     for split, n in (("train", 24), ("validation", 8))})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    train = tiny(task=task, data={"synthetic": None, "name": name})
    result = run_training(spec_for(train, "hub"), run_dir_for("hub"))
    assert calls == [expected]
    assert result["data"]["eval_examples"] == 8


def test_a_compressed_csv_and_a_json_list_of_records_load(tmp_path: Path) -> None:
    """t.csv.gz was read as JSON (only a last suffix .csv meant CSV), and a JSON list of records is the
    other common shape; both load with the task's features, as the README promises."""
    import gzip

    from jobs.tasks import TASKS

    rows = [{"sentence": r["sentence"], "label": r["label"]} for r in generate_sst2(6, 1, "train")]
    compressed = tmp_path / "t.csv.gz"
    with gzip.open(compressed, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sentence", "label"])
        writer.writeheader()
        writer.writerows(rows)
    as_list = tmp_path / "t.json"
    as_list.write_text(json.dumps(rows))
    features = TASKS["sst2"].raw_features  # None for SST-2: the loader infers them, as a run does
    for path in (compressed, as_list):
        dataset = load_local_file(path, features, tmp_path / path.name.replace(".", "_"))
        assert [dict(row) for row in dataset] == rows, path
