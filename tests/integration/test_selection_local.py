"""examples/sst2_selection_cpu.yaml end to end on the local executor (a tiny random BERT in place of
MiniLM, one seed): the teacher runs first and scores its rows, each student trains on the subset its
strategy picks, and collect tables the strategies."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.integration import tiny

pytestmark = pytest.mark.train

TWIN = tiny.REPO / "examples" / "sst2_selection_cpu.yaml"


def _twin_matrix(tmp_path: Path) -> Path:
    """The twin with the tiny model and data, one seed, a few steps: its runs and chain unchanged."""
    matrix = yaml.safe_load(TWIN.read_text())
    tiny_defaults = yaml.safe_load(tiny.TINY_DEFAULTS)["defaults"]
    matrix["defaults"] = {**matrix["defaults"], **tiny_defaults, "task": "sst2", "max_steps": 4, "save_steps": 4,
                          "data": {"synthetic": {"n_train": 60, "n_eval": 16, "seed": 0}}}
    matrix["root"], matrix["grid"] = str(tmp_path / "scratch"), {"seed": [1]}
    matrix["runs"]["teacher"]["max_steps"] = 6
    for name, body in matrix["runs"].items():
        if name != "teacher":
            body["data"]["select_from"]["size"] = 20
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix))
    return path


def test_twin_chain_selects_and_collects(tmp_path: Path) -> None:
    _twin_matrix(tmp_path)
    # six runs one after another: minutes on a busy 2-core machine
    tiny.orchestrate(tmp_path, "submit", "matrix.yaml", "--executor", "local", "--wait", timeout=1500)
    check_twin(tmp_path)


def check_twin(tmp_path: Path) -> None:
    """The chain's files and collect's table, once every run has ended."""
    rows = json.loads(tiny.orchestrate(tmp_path, "status", "--json").stdout)["runs"]
    assert {r["state"] for r in rows} == {"completed"} and len(rows) == 6, rows
    runs = tmp_path / "scratch" / "sst2_selection_cpu" / "runs"
    by_name = {r["run_name"]: runs / r["run_id"] for r in rows}
    teacher = json.loads((by_name["teacher-seed1"] / "per_example_scores.json").read_text())["rows"]
    assert len(teacher) == 60
    chosen = {name.split("-")[0]: json.loads((path / "selection.json").read_text())
              for name, path in by_name.items() if name != "teacher-seed1"}
    indices = {name: {r["index"] for r in record["rows"]} for name, record in chosen.items()}
    assert all(len(found) == 20 for found in indices.values())
    assert not indices["easy"] & indices["hard"]  # 20 of 60 rows from either end: disjoint
    mean_rank = {name: sum(r["rank"] for r in record["rows"]) / 20 for name, record in chosen.items()}
    assert mean_rank["easy"] < mean_rank["middle"] < mean_rank["hard"]
    assert chosen["mixed"]["bands"] == {"easy": 4, "middle": 12, "hard": 4, "random": 0}
    for name in chosen:  # each student trained on exactly the rows its selection names
        subset = json.loads((by_name[f"{name}-seed1"] / "train_subset.json").read_text())
        assert subset["indices"] == sorted(indices[name]) and subset["strategy"] == f"select_from:{name}"

    tiny.orchestrate(tmp_path, "collect")
    with (tmp_path / "results" / "sst2_selection_cpu" / "runs.csv").open() as handle:
        table = list(csv.DictReader(handle))
    strategies = {row["train.data.select_from.strategy"] for row in table} - {""}  # the teacher has none
    assert strategies == {"random", "easy", "hard", "middle", "mixed"} and len(table) == 6
