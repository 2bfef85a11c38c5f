"""Matrix validation (exact messages), expansion, run ids, extends, grid, baseline."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import MatrixError
from orchestrator.matrix import load_matrix, select

REPO = Path(__file__).resolve().parents[2]

BASE = """
experiment: study
root: {root}
cluster: example-t4
baseline: A1
defaults:
  precision: fp16
  learning_rate: 3e-5
grid:
  seed: [1, 2]
runs:
  A1: {attention: eager}
  A2: {extends: A1, attention: sdpa}
  A3: {extends: A2, compile: {backend: inductor}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.yaml"
    path.write_text(textwrap.dedent(text).replace("{root}", str(tmp_path / "scratch")))
    return path


def problems_of(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(MatrixError) as info:
        load_matrix(write(tmp_path, text))
    assert not (tmp_path / "scratch").exists(), "validation must write nothing"
    return info.value.problems


def test_expansion_extends_and_grid(tmp_path: Path) -> None:
    matrix = load_matrix(write(tmp_path, BASE))
    names = [r.run_name for r in matrix.runs]
    assert names == ["A1-seed1", "A1-seed2", "A2-seed1", "A2-seed2", "A3-seed1", "A3-seed2"]
    a3 = next(r for r in matrix.runs if r.run_name == "A3-seed2")
    assert a3.train.attention == "sdpa" and a3.train.compile is not None and a3.train.compile.backend == "inductor"
    assert a3.train.learning_rate == 3e-5 and isinstance(a3.train.learning_rate, float)
    assert a3.train.seed == 2 and a3.series == "A" and a3.grid_values == {"seed": 2}
    assert a3.run_id == f"A3-seed2-{a3.config_hash}"
    assert a3.baseline_run_id == next(r.run_id for r in matrix.runs if r.run_name == "A1-seed2")
    assert next(r for r in matrix.runs if r.run_name == "A1-seed1").baseline_run_id is None
    assert a3.resources.partition == "t4" and a3.resources.gpus == 1  # from the profile's defaults


def test_run_ids_are_stable_and_change_with_config(tmp_path: Path) -> None:
    first = {r.run_name: r.run_id for r in load_matrix(write(tmp_path, BASE)).runs}
    again = {r.run_name: r.run_id for r in load_matrix(write(tmp_path, BASE)).runs}
    assert first == again
    changed = {r.run_name: r.run_id for r in load_matrix(write(tmp_path, BASE.replace("3e-5", "5e-5"))).runs}
    assert all(changed[name] != first[name] for name in first)
    # a new time limit is the same experiment: resources are not in the hash
    longer = BASE.replace("runs:", "resources: {time_min: 999}\nruns:")
    assert {r.run_name: r.run_id for r in load_matrix(write(tmp_path, longer)).runs} == first


def test_rank_sweep_names(tmp_path: Path) -> None:
    text = BASE + "  B1: {extends: A3, lora: {r: 8}, grid: {lora.r: [4, 16]}}\n"
    names = [r.run_name for r in load_matrix(write(tmp_path, text)).runs if r.base_name == "B1"]
    assert names == ["B1-seed1-r4", "B1-seed1-r16", "B1-seed2-r4", "B1-seed2-r16"]


@pytest.mark.parametrize(
    "change, expected",
    [
        (("learning_rate: 3e-5", "learning_rte: 3e-5"),
         ("defaults.learning_rte", "unknown key (did you mean 'learning_rate'?)")),
        (("backend: inductor", "backend: indcutor"),
         ("runs.A3.compile.backend", "'indcutor' is not one of inductor, aot_eager (did you mean 'inductor'?)")),
        (("precision: fp16", "precision: 16"),
         ("defaults.precision", "16 is not one of fp32, fp16, bf16 (did you mean 'fp16'?)")),
        (("extends: A1,", "extends: A9,"),
         ("runs.A2.extends", "'A9' is not a run; runs are A1, A2, A3")),
        (("seed: [1, 2]", "seed: []"),
         ("grid.seed", "empty axis: give at least one value (an empty axis would expand to no runs)")),
        (("cluster: example-t4", "cluster: nosuch"),
         ("cluster", ("'nosuch' is not a cluster profile (available: example-t4, local); "
                     "add slurm_templates/nosuch/profile.yaml and preamble.sh.j2"))),
        (("baseline: A1", "baseline: Z1"),
         ("baseline", "'Z1' is not a run; runs are A1, A2, A3")),
        (("experiment: study", "experiment: ../evil"),
         ("experiment", ("'../evil' is not a safe name: use letters, digits and _.+- "
                        "(starting with a letter or digit, at most 100 characters)"))),
    ],
)
def test_bad_input_messages(tmp_path: Path, change: tuple[str, str], expected: tuple[str, str]) -> None:
    assert change[0] in BASE
    assert expected in problems_of(tmp_path, BASE.replace(*change))


def test_wrong_type_names_key(tmp_path: Path) -> None:
    found = problems_of(tmp_path, BASE.replace("A1: {attention: eager}", "A1: {attention: eager, batch_size: many}"))
    assert any(path == "runs.A1.batch_size" and "'many'" in message for path, message in found)


def test_yaml_syntax_error_and_duplicates(tmp_path: Path) -> None:
    found = problems_of(tmp_path, BASE + "  A4: [unclosed\n")
    assert found[0][0] == "" and found[0][1].startswith("YAML syntax error at line")
    found = problems_of(tmp_path, BASE + "  A1: {attention: sdpa}\n")
    assert found == [("runs.A1", "duplicate key at line 15 (each key, and each run name, may appear once)")]


def test_cycle_and_unsafe_names(tmp_path: Path) -> None:
    text = BASE + "  C1: {extends: C2}\n  C2: {extends: C1}\n  '../x': {}\n  'a b;rm -rf': {}\n"
    found = dict(problems_of(tmp_path, text))
    assert found["runs.C1.extends"] == "extends cycle: C1 -> C2 -> C1"
    assert "not a safe run name" in found["runs.../x"]
    assert "not a safe run name" in found["runs.a b;rm -rf"]


def test_every_problem_at_once(tmp_path: Path) -> None:
    text = BASE.replace("learning_rate", "learning_rte").replace("indcutor", "x").replace("backend: inductor", "backend: indcutor")
    paths = {p for p, _ in problems_of(tmp_path, text)}
    assert {"defaults.learning_rte", "runs.A3.compile.backend"} <= paths


def test_hardware_rules_refused_before_submission(tmp_path: Path) -> None:
    found = problems_of(tmp_path, BASE.replace("A1: {attention: eager}", "A1: {attention: eager, precision: bf16}"))
    assert ("runs.A1", "precision bf16 is not supported on Tesla T4; use fp16 (partition t4)") in found
    found = problems_of(tmp_path, BASE.replace("A1: {attention: eager}", "A1: {attention: eager, bitfit: {}, lora: {r: 4}}"))
    assert any(p == "runs.A1" and "bitfit together with lora" in m for p, m in found)
    cpu = BASE.replace("A1: {attention: eager}", "A1: {attention: eager, resources: {partition: cpu, gpus: 0}}")
    found = problems_of(tmp_path, cpu)
    assert ("runs.A1", "precision fp16 needs a GPU; use precision: fp32 or ask for gpus >= 1 (partition cpu)") in found


def test_grid_too_large_and_null_section(tmp_path: Path) -> None:
    big = BASE.replace("seed: [1, 2]", "seed: [" + ", ".join(map(str, range(400))) + "]\n  learning_rate: ["
                       + ", ".join(f"{i}.0e-5" for i in range(1, 251)) + "]")
    found = problems_of(tmp_path, big)
    assert found == [("grid", "the matrix expands to more than 5000 runs (max_runs); trim the grid axes or raise max_runs deliberately")]
    found = problems_of(tmp_path, BASE + "  B1: {extends: A3, grid: {lora.r: [4]}}\n")
    assert ("runs.B1", "grid axis lora.r needs lora to be set on this run (it is null)") in found


def test_select(tmp_path: Path) -> None:
    runs = load_matrix(write(tmp_path, BASE)).runs
    assert {r.base_name for r in select(runs, "A1,A3")} == {"A1", "A3"}
    assert [r.run_name for r in select(runs, "A2-seed1")] == ["A2-seed1"]
    assert len(select(runs, "A*")) == 6


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_validates(example: Path) -> None:
    matrix = load_matrix(example)
    assert matrix.runs
