"""data.select_from in the matrix: pairing with the teacher, its id in the student's hash, and every
refusal at submit at once (unknown teacher, strategy, mix, size, a teacher without scores)."""

from __future__ import annotations

from pathlib import Path

from jobs.contract import TrainConfig, config_hash
from tests.unit.test_init_from import load, problems

BASE = """
experiment: select
root: {root}
cluster: example-t4
defaults: {task: sst2, data: {synthetic: {n_train: 400, n_eval: 50}}, learning_rate: 3.0e-5}
grid: {seed: [1, 2]}
runs:
  T: {per_example_scores: true}
  S:
    data: {select_from: {run: T, strategy: hard, size: 100}}
    grid: {data.select_from.strategy: [random, easy, hard, middle, mixed]}
"""


def test_each_strategy_pairs_with_the_teacher_of_its_seed(tmp_path: Path) -> None:
    runs = load(tmp_path, BASE).runs
    assert [r.base_name for r in runs] == ["T"] * 2 + ["S"] * 10  # teachers first
    teachers = {r.grid_values["seed"]: r for r in runs if r.base_name == "T"}
    for student in (r for r in runs if r.base_name == "S"):
        ref = student.source
        teacher = teachers[student.grid_values["seed"]]
        assert ref is not None and ref.key == "select_from" and ref.take is None
        assert ref.run_id == teacher.run_id and ref.config_hash == teacher.config_hash
        assert student.config_hash != config_hash(student.train)  # the teacher's id is in it
    assert not any(r.save_model for r in runs)  # a teacher gives scores, no model export
    assert len({r.run_id for r in runs}) == 12


def test_a_changed_teacher_gives_students_new_ids(tmp_path: Path) -> None:
    before = {r.run_name: r.run_id for r in load(tmp_path, BASE).runs}
    after = {r.run_name: r.run_id for r in load(tmp_path, BASE.replace("T: {per", "T: {max_steps: 7, per")).runs}
    assert all(before[name] != after[name] for name in before)


def test_unset_knobs_leave_old_hashes_alone() -> None:
    train = TrainConfig.model_validate({"task": "sst2", "data": {"name": "glue/sst2"}})
    dumped = train.model_dump()
    assert dumped["per_example_scores"] is None and dumped["data"]["select_from"] is None
    # the hash of a config without the new knobs is the one it had before they existed
    assert config_hash(train) == config_hash(TrainConfig.model_validate({"task": "sst2", "data": {"name": "glue/sst2"}}))


BAD = """
experiment: select
root: {root}
cluster: example-t4
defaults: {task: sst2, data: {synthetic: {n_train: 400, n_eval: 50}}}
runs:
  T: {}
  U: {per_example_scores: true, data: {synthetic: {n_train: 400, n_eval: 50}, max_train_samples: 100}}
  Q: {task: squad_v2, per_example_scores: true}
  Z: {per_example_scores: true, data: {synthetic: {n_train: 400, n_eval: 50}, max_train_samples: 0}}
  a: {data: {select_from: {run: Teacher, strategy: hard, size: 100}}}
  b: {data: {select_from: {run: U, strategy: hardest, size: 10}}}
  c: {data: {select_from: {run: U, strategy: mixed, size: 10, mix: {easy: 0.5, middle: 0.6, hard: 0.2}}}}
  d: {data: {select_from: {run: T, strategy: easy, size: 10}}}
  e: {data: {select_from: {run: U, strategy: easy, size: 200}}}
  f: {data: {select_from: {run: U, strategy: easy, size: 500}}}
  g: {data: {select_from: {run: U, strategy: easy, size: 10, mix: {easy: 1.0}}}}
  h: {data: {select_from: {run: U, strategy: easy, size: 10}, max_train_samples: 10}}
  i: {init_from: {run: T}, data: {select_from: {run: U, strategy: easy, size: 10}}}
  j: {data: {synthetic: {n_train: 300, n_eval: 50}, select_from: {run: U, strategy: easy, size: 10}}}
"""


def test_every_refusal_at_once(tmp_path: Path) -> None:
    found = dict(problems(tmp_path, BAD))
    assert len(found) == 12  # one a refused run, none twice
    assert found["runs.a.data.select_from.run"].startswith(
        "'Teacher' is not a configuration of this matrix: name one of the runs: keys (T, U, Q, Z, a,")
    assert found["runs.b.data.select_from.strategy"] == (
        "'hardest' is not one of random, easy, hard, middle, mixed (did you mean 'hard'?)")
    assert found["runs.c.data.select_from.mix"] == (
        "easy + middle + hard is 1.3, not 1: adjust the fractions (easy 0.5, middle 0.6, hard 0.2) so they sum to 1")
    assert found["runs.d.data.select_from"] == (
        "run: T writes no per-example scores: add per_example_scores: true to runs.T")
    assert found["runs.e.data.select_from"] == (
        "size 200 is more than U's 100 scored training rows: lower size to at most 100 or raise U's "
        "data.max_train_samples")
    assert "data.select_from.size 500 is more than the 400 rows of data.synthetic.n_train" in found["runs.f.data"]
    assert "mix applies to strategy mixed only (strategy is 'easy')" in found["runs.g.data.select_from"]
    assert "drop data.max_train_samples" in found["runs.h.data"]
    assert found["runs.i.data.select_from"] == (
        "init_from (run: T) and data.select_from (run: U) both name a source run, and a run has one source (one "
        "job to wait for, one source in its spec): drop data.select_from to start from T's model on all the "
        "training rows, or drop init_from to train on the rows chosen from U's scores from the pretrained model")
    assert found["runs.j.data.select_from"].startswith("run: U trains on other data (data.synthetic differ)")
    assert found["runs.Z.per_example_scores"].startswith("scores the rows a run trains on; data.max_train_samples is 0")
    assert found["runs.Q.per_example_scores"].startswith("ranks training rows by a classifier's loss; task squad_v2")
