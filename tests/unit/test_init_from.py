"""init_from: pairing over grids, missing sources, cycles, ambiguity, the source in the dependent's hash."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import MatrixError
from orchestrator.matrix import load_matrix

BASE = """
experiment: chain
root: {root}
cluster: example-t4
defaults: {task: sst2, data: {name: glue/sst2}, learning_rate: 3.0e-5}
runs:
  T: {grid: {seed: [1, 2]}}
  S: {grid: {seed: [1, 2]}, init_from: {run: T, take: model}, data: {max_train_samples: 0}}
"""


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "matrix.yaml"
    path.write_text(textwrap.dedent(text).replace("{root}", str(tmp_path / "scratch")))
    return load_matrix(path)


def problems(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(MatrixError) as info:
        load(tmp_path, text)
    return info.value.problems


def test_same_seed_pairs_and_sources_come_first(tmp_path: Path) -> None:
    runs = load(tmp_path, BASE).runs
    by_name = {r.run_name: r for r in runs}
    assert [r.base_name for r in runs] == ["T", "T", "S", "S"]
    for seed in (1, 2):
        student, teacher = by_name[f"S-seed{seed}"], by_name[f"T-seed{seed}"]
        assert student.source is not None and student.source.run_id == teacher.run_id
        assert student.source.config_hash == teacher.config_hash and student.source.take == "model"
        assert teacher.save_model and not student.save_model
        assert student.run_id == f"S-seed{seed}-{student.config_hash}"


def test_single_source_and_dependents_listed_before_in_matrix(tmp_path: Path) -> None:
    text = BASE.replace("T: {grid: {seed: [1, 2]}}", "T: {}")
    text = text.replace("runs:\n", "runs:\n  E: {grid: {seed: [1, 2]}, init_from: {run: S}}\n")
    runs = load(tmp_path, text).runs
    assert [r.base_name for r in runs] == ["T", "S", "S", "E", "E"]  # sources first, whatever the matrix order
    teacher = runs[0]
    assert all(r.source is not None and r.source.run_id == teacher.run_id for r in runs[1:3])
    assert [r.source.run_name for r in runs[3:] if r.source] == ["S-seed1", "S-seed2"]
    assert teacher.save_model and runs[1].save_model and not runs[3].save_model


def test_ambiguous_missing_cycle_all_at_once(tmp_path: Path) -> None:
    text = BASE.replace("S: {grid: {seed: [1, 2]}, ", "S: {")  # S has no seed axis: two teachers match
    text += "  U: {init_from: {run: Teacher}}\n  X: {init_from: {run: Y}}\n  Y: {init_from: {run: X}}\n"
    found = dict(problems(tmp_path, text))
    assert "pairs with 2 runs of 'T' (T-seed1, T-seed2): they differ in seed" in found["runs.S.init_from.run"]
    assert found["runs.U.init_from.run"].startswith("'Teacher' is not a configuration of this matrix")
    assert "X -> Y -> X is a cycle" in found["runs.X.init_from.run"]


def test_self_and_take_mismatch(tmp_path: Path) -> None:
    text = BASE.replace("run: T, take: model", "run: T, take: adapter")
    text += "  Z: {init_from: {run: Z}}\n"
    found = dict(problems(tmp_path, text))
    assert "Z -> Z is a cycle" in found["runs.Z.init_from.run"]
    assert "take: adapter needs a LoRA source" in found["runs.S.init_from"]


def test_changed_source_changes_dependent_id(tmp_path: Path) -> None:
    first = {r.run_name: r.run_id for r in load(tmp_path, BASE).runs}
    changed = {r.run_name: r.run_id for r in load(tmp_path, BASE.replace(
        "T: {grid: {seed: [1, 2]}}", "T: {grid: {seed: [1, 2]}, learning_rate: 5.0e-5}")).runs}
    assert all(changed[name] != first[name] for name in first)
    no_source = {r.run_name: r.run_id for r in load(tmp_path, BASE.replace(
        ", init_from: {run: T, take: model}", "")).runs}
    assert no_source["S-seed1"] != first["S-seed1"] and no_source["T-seed1"] == first["T-seed1"]


def test_waves_and_sbatch_dependency(tmp_path: Path) -> None:
    from orchestrator.backends.slurm.script import render_script
    from orchestrator.experiment import chain

    text = BASE.replace("runs:\n", "runs:\n  E: {grid: {seed: [1, 2]}, init_from: {run: S}}\n")
    matrix = load(tmp_path, text)
    assert [[s.base_name for s in wave] for wave in chain.waves(matrix.runs)] == [["T", "T"], ["S", "S"], ["E", "E"]]
    grouped = dict(chain.by_source(matrix.runs[2:4], {matrix.runs[2].run_id: "7_0", matrix.runs[3].run_id: "7_1"}))
    assert {job: [s.run_name for s in runs] for job, runs in grouped.items()} == {"7_0": ["S-seed1"], "7_1": ["S-seed2"]}
    script = render_script(matrix, matrix.runs[2].resources, 1, tmp_path, "n", after_job="7_0")
    assert "#SBATCH --dependency=afterok:7_0" in script and "#SBATCH --kill-on-invalid-dep=yes" in script
    assert "--dependency" not in render_script(matrix, matrix.runs[0].resources, 1, tmp_path, "n")


@pytest.mark.parametrize("recorded", [False, True], ids=["spec.json", "manifest"])
def test_status_names_the_source(tmp_path: Path, recorded: bool) -> None:
    """From each spec.json (a manifest written before submit recorded the sources), or from the
    manifest's record alone (no spec.json to read: status of 10,000 runs reads none)."""
    from jobs.contract import RunDir
    from orchestrator.experiment.manifest import Manifest
    from orchestrator.experiment.store import Experiment
    from orchestrator.status import RunStatus
    from orchestrator.status_sources import explain_dependents

    runs = load(tmp_path, BASE).runs
    experiment = Experiment(tmp_path / "exp")
    manifest = Manifest.empty("exp")
    manifest.current_runs = {spec.run_name: spec.run_id for spec in runs}
    for spec in runs if not recorded else []:
        run_dir = RunDir(experiment.runs_dir / spec.run_id)
        run_dir.path.mkdir(parents=True)
        run_dir.write_spec(spec)
    if recorded:
        manifest.record_sources(runs)
    t1, t2, s1, s2 = runs
    rows = [RunStatus(t1.run_id, t1.run_name, "failed", reason="nan_loss: ..."),
            RunStatus(t2.run_id, t2.run_name, "running"),
            RunStatus(s1.run_id, s1.run_name, "pending", reason="DependencyNeverSatisfied"),
            RunStatus(s2.run_id, s2.run_name, "pending", reason="Dependency")]
    explain_dependents(experiment, manifest, rows)
    assert rows[2].state == "cancelled" and rows[2].reason.startswith("source run T-seed1 failed (nan_loss")
    assert "SLURM: DependencyNeverSatisfied" in rows[2].reason and "--retry-failed" in rows[2].reason
    assert rows[3].state == "pending" and rows[3].reason == "waiting for source run T-seed2 running (Dependency)"
    if recorded:  # a record of another matrix is stale: the specs say (here: none to read, so no source)
        manifest.matrix_sha256 = "another"
        rows[3].reason = "Dependency"
        explain_dependents(experiment, manifest, rows)
        assert rows[3].reason == "Dependency"


def test_local_queue_source_rule(tmp_path: Path) -> None:
    """The local queue's afterok: wait while the source is queued or running, cancel once it ended without
    a result (an earlier attempt's failure.json does not count while a retry is queued)."""
    from orchestrator.backends.local.queue import SOURCE_DONE, SOURCE_FAILED, SOURCE_WAIT, source_state
    from orchestrator.experiment.manifest import Attempt
    from orchestrator.experiment.store import Experiment

    experiment = Experiment(tmp_path / "exp")
    run_dir = experiment.run_dir("T-1")
    run_dir.path.mkdir(parents=True)
    run_dir.write_failure("nan_loss", "earlier attempt")
    assert source_state(experiment, None) == SOURCE_DONE
    assert source_state(experiment, "T-1") == SOURCE_FAILED  # never submitted again
    with experiment.locked():
        manifest = experiment.read_manifest()
        manifest.add_attempt("T-1", "T", Attempt(executor="local", state="queued"))
        experiment.write_manifest(manifest)
    assert source_state(experiment, "T-1") == SOURCE_WAIT
    with experiment.locked():
        manifest = experiment.read_manifest()
        manifest.runs["T-1"].attempts[-1].state = "ended"
        experiment.write_manifest(manifest)
    assert source_state(experiment, "T-1") == SOURCE_FAILED
    run_dir.result_path.write_text("{}")
    assert source_state(experiment, "T-1") == SOURCE_DONE


def test_a_dependent_whose_source_is_left_out_says_why(tmp_path: Path) -> None:
    from orchestrator.experiment import chain
    from orchestrator.experiment.manifest import Manifest
    from orchestrator.experiment.plan import Plan
    from orchestrator.experiment.store import Experiment

    runs = load(tmp_path, BASE).runs
    students = [r for r in runs if r.base_name == "S"]
    the_plan = Plan(new=list(students))  # as with --only 'S*': the sources are not submitted now
    notes = chain.hold_back(the_plan, Manifest(), Experiment(tmp_path / "scratch" / "chain"))
    assert the_plan.new == [] and len(notes) == 2
    assert "it was never submitted (left out by --only?): include it, e.g. --only T-seed1,S-seed1" in notes[0], notes


TRANSFER = """
experiment: transfer
root: {root}
cluster: example-t4
defaults: {data: {name: glue/sst2}, learning_rate: 3.0e-5}
grid: {seed: [1]}
runs:
  src: {task: sst2, lora: {r: 8}, grid: {lora.placement: [attn-qkv, ffn-only]}}
  transfer: {task: mrpc, data: {name: glue/mrpc}, lora: {r: 8}, grid: {lora.placement: [attn-qkv, ffn-only]},
             init_from: {run: src, take: adapter, trainable: head}}
"""


def test_head_only_transfer_pairs_by_placement_and_keeps_old_ids(tmp_path: Path) -> None:
    runs = load(tmp_path, TRANSFER).runs
    by_name = {r.run_name: r for r in runs}
    for placement in ("attn-qkv", "ffn-only"):
        dependent = by_name[f"transfer-placement_{placement}-seed1"] if f"transfer-placement_{placement}-seed1" \
            in by_name else next(r for r in runs if r.base_name == "transfer" and
                                 r.grid_values["lora.placement"] == placement)
        assert dependent.source is not None and dependent.train.init_from is not None
        assert dependent.train.init_from.trainable == "head"
        source = next(r for r in runs if r.run_id == dependent.source.run_id)
        assert source.train.lora is not None and source.train.lora.placement == placement
    # trainable at its default is left out of spec.json and the hash: the ids from before it stay
    plain = load(tmp_path, BASE.replace("take: model}", "take: model, trainable: all}")).runs
    assert [r.run_id for r in plain] == [r.run_id for r in load(tmp_path, BASE).runs]
    assert "trainable" not in plain[2].model_dump(mode="json")["train"]["init_from"]


def test_take_mismatches_across_tasks_and_architectures(tmp_path: Path) -> None:
    text = """
experiment: transfer
root: {root}
cluster: example-t4
defaults: {data: {name: glue/mrpc}, task: mrpc}
runs:
  src: {task: sst2, data: {name: glue/sst2}, lora: {r: 8}}
  transfer: {lora: {r: 4}, model_overrides: {num_hidden_layers: 2}, init_from: {run: src, take: adapter}}
  bit: {bitfit: {}, init_from: {run: src, take: adapter, trainable: head}}
  whole: {init_from: {run: src, take: model}}
  probe: {task: sst2, data: {name: glue/sst2}, init_from: {run: src, take: backbone, trainable: head}, freeze: {layers: 1}, lora: {r: 8}}
"""
    found = problems(tmp_path, text)
    assert {where for where, _ in found} == {f"runs.{name}.init_from" for name in ("transfer", "bit", "whole", "probe")}
    said = {name: " | ".join(message for where, message in found if where == f"runs.{name}.init_from")
            for name in ("transfer", "bit", "whole", "probe")}
    assert "model_overrides {'num_hidden_layers': 2} differs from the source's {}" in said["transfer"]
    assert "drop this run's own lora, or give it the source's lora values" in said["transfer"]
    assert "take: adapter brings the source's adapter: drop this run's own bitfit" in said["bit"]
    assert "trainable: head trains the task head alone (the rest frozen): drop this run's own bitfit" in said["bit"]
    assert "take: model keeps the source's sst2 head, this run's task is mrpc" in said["whole"]
    assert "drop this run's own lora" in said["probe"] and "drop this run's own freeze" in said["probe"]


def test_pairing_looks_runs_up_by_their_shared_grid_values() -> None:
    """Students pair with teachers by an index, not by comparing every pair (5,000 x 5,000 took minutes);
    list and mapping values pair by equality as before."""
    import time

    from jobs.contract import RunSpec
    from orchestrator.matrix.sources import _Candidates

    def run(name: str, **grid: object) -> RunSpec:
        return RunSpec.model_construct(run_id=name, run_name=name, grid_values=grid)

    teachers = [run(f"T{seed}", seed=seed, mods=["q", "v"], opt={"b": 1, "a": 2}) for seed in range(3000)]
    teachers.append(run("Tk", seed=1, mods=["k"], opt={"a": 2, "b": 1}))
    candidates = _Candidates({"T": teachers})
    started = time.perf_counter()
    for seed in range(3000):
        shared, found = candidates.matches(run(f"S{seed}", seed=seed, mods=["q", "v"]), "T")
        assert shared == ["seed", "mods"] and [t.run_name for t in found] == [f"T{seed}"]
    assert time.perf_counter() - started < 5.0  # an index: well under a second; the pairwise scan took ~30 s
    assert [t.run_name for t in candidates.matches(run("S", seed=1, opt={"b": 1, "a": 2}), "T")[1]] == ["T1", "Tk"]
    assert candidates.matches(run("E", lr=1), "T") == ([], teachers)  # no shared axis: every run (then refused)
