"""Chains at submit and in the feeder: a dependent of a source that failed is not fed; a dependent of a
source that ran without saving its model is refused at submit. The fake scheduler of test_fake_backend
and the capped one of test_job_cap; the real cluster runs chains in tests/integration/test_transfer_slurm.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from jobs.contract import CHECKPOINT_MARKER_FILE, MODEL_EXPORT_DIR
from orchestrator import feed
from orchestrator.backends import registry
from orchestrator.backends.base import Group
from orchestrator.cli import main
from orchestrator.experiment.store import Experiment
from tests.unit import test_job_cap
from tests.unit.test_fake_backend import JOBS, FakeBackend
from tests.unit.test_job_cap import FEEDERS, capped  # noqa: F401 - the fixture, used by name

# test_job_cap's study (account capstudy, synthetic data), three seeds of one source configuration T
CHAIN = test_job_cap.MATRIX.replace("experiment: capped", "experiment: chained").replace(
    "seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "seed: [1, 2, 3]").replace("A1: {{}}", "T: {{}}")
DEPENDENT = "  S: {init_from: {run: T}}\n"
AFTER: list[str | None] = []  # the source job each submitted array waits for


class RecordingBackend(FakeBackend):
    def submit(self, group: Group) -> list[str | None]:
        AFTER.append(group.after_job)
        return super().submit(group)


def chain_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dependents: bool = True) -> tuple[Path, Experiment]:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(CHAIN).format(root=tmp_path / "scratch") + (DEPENDENT if dependents else ""))
    return path, Experiment(tmp_path / "scratch" / "chained")


def finish(experiment: Experiment, run_name: str, exported: bool) -> None:
    """The run's job completed: its result.json, and its sealed model/ when it saved one."""
    manifest = experiment.read_manifest()
    run_id = next(r for r in manifest.runs if r.startswith(f"{run_name}-"))
    JOBS[str(manifest.latest_attempt(run_id).job_id)] = "completed"  # type: ignore[union-attr]
    run_dir = experiment.run_dir(run_id)
    run_dir.result_path.write_text("{}")
    if exported:
        (run_dir.path / MODEL_EXPORT_DIR).mkdir()
        (run_dir.path / MODEL_EXPORT_DIR / CHECKPOINT_MARKER_FILE).write_text("{}")


def test_the_feeder_holds_back_a_dependent_whose_source_failed(
        capped: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811 - the fixture
        capsys: pytest.CaptureFixture[str]) -> None:
    path, experiment = chain_study(tmp_path, monkeypatch)
    assert main(["submit", str(path), "--executor", "fake"]) == 0  # cap 4: T-seed1..3 now, S waits, the feeder
    assert "3 run(s) waiting for a slot: feeder job 90" in capsys.readouterr().out
    finish(experiment, "T-seed1", exported=True)
    JOBS["fake-1"] = "failed"  # T-seed2: no result
    JOBS["fake-2"] = "running"  # T-seed3 (requeued, say): its dependent may still wait for it
    FEEDERS["90"] = "running"
    monkeypatch.setattr(test_job_cap, "CAP", 5)  # T-seed3 and the feeder queued: room for the three dependents
    outcome = feed.feed(experiment, "90")
    assert outcome is not None
    assert [spec.run_name for s in outcome.submissions for spec in [experiment.run_dir(r).read_spec()
                                                                    for r in s.run_ids]] == ["S-seed1", "S-seed3"]
    assert outcome.warnings == [("skip S-seed2: its source T-seed2 has no result and is not submitted now (it "
                                "failed before: `orchestrate submit --retry-failed` reruns the chain)")]
    manifest = experiment.read_manifest()
    assert manifest.waiting == [] and manifest.feeder is None  # held: it waits for the user, not for a slot
    assert main(["status", str(experiment.path), "--json"]) == 0
    rows = {row["run_name"]: row for row in json.loads(capsys.readouterr().out)["runs"]}
    assert (rows["S-seed2"]["state"], rows["S-seed2"]["reason"]) == ("not submitted", (
        "source run T-seed2 failed (fake: failed): held back; `orchestrate submit --retry-failed` reruns the chain"))


def test_a_dependent_of_a_source_that_saved_no_model_is_refused_at_submit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    JOBS.clear()
    AFTER.clear()
    with registry.register("fake", RecordingBackend):
        _refused_then_forced(tmp_path, monkeypatch, capsys)


def _refused_then_forced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    alone, experiment = chain_study(tmp_path, monkeypatch, dependents=False)
    assert main(["submit", str(alone), "--executor", "fake"]) == 0  # T alone: no run starts from it yet
    path = tmp_path / "chain.yaml"
    path.write_text(alone.read_text() + DEPENDENT)
    capsys.readouterr()
    assert main(["submit", str(path), "--executor", "fake"]) == 2  # T still pending: it will save no model
    err = capsys.readouterr().err
    assert "source run T-seed1 (queued or running: it will save no model/): S-seed1 cannot start from it" in err
    assert "once the queued or running ones have ended" in err
    finish(experiment, "T-seed1", exported=False)
    finish(experiment, "T-seed2", exported=True)  # as if an earlier matrix had a dependent of it
    finish(experiment, "T-seed3", exported=False)
    submissions = len(experiment.read_manifest().submissions)
    assert main(["submit", str(path), "--executor", "fake", "--dry-run"]) == 2
    assert main(["submit", str(path), "--executor", "fake"]) == 2
    err = capsys.readouterr().err
    runs = experiment.runs_dir
    assert "error: 2 init_from source(s) ran in a submit where no run started from them, so they keep no saved " \
           "model (model/); nothing was submitted:" in err
    assert f"source run T-seed1 (completed: no {runs}/T-seed1-" in err and "S-seed1 cannot start from it" in err
    assert "T-seed2" not in err and "`orchestrate submit MATRIX --force T-seed1,T-seed3`" in err
    manifest = experiment.read_manifest()
    assert len(manifest.submissions) == submissions and not any(r.startswith("S-") for r in manifest.runs)
    assert not list(runs.glob("S-*"))  # nothing half-done: no dependent's directory either

    assert main(["submit", str(path), "--executor", "fake", "--force", "T-seed1,T-seed3"]) == 0
    assert "5 new" in capsys.readouterr().out  # T-seed1, T-seed3 again; the three dependents
    manifest = experiment.read_manifest()
    forced = [experiment.run_dir(r).read_spec() for r in manifest.runs if r.startswith("T-")]
    assert all(spec.save_model for spec in forced if spec.run_name != "T-seed2")


@pytest.fixture
def no_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A login node without SLURM's commands: the dry run renders the sbatch scripts all the same."""
    from orchestrator.backends.slurm import commands

    def unreadable() -> dict[str, str]:
        raise OSError("scontrol is not on the PATH")

    monkeypatch.setattr(commands, "slurm_available", lambda: False)
    monkeypatch.setattr(commands, "read_config", unreadable)


def test_the_dry_run_shows_each_chain_its_waves_and_afterok_compactly(
        no_slurm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = chain_study(tmp_path, monkeypatch)
    path.write_text(path.read_text().replace("seed: [1, 2, 3]", f"seed: {list(range(1, 41))}"))
    assert main(["submit", str(path), "--executor", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if line.startswith(("  T-seed", "  S-seed"))]
    assert len(table) == 80 and table[0][-2:] == ["wave", "1"]
    assert table[40][0] == "S-seed1" and table[40][-5:] == ["wave", "2", "after", "T-seed1", "(init_from)"]
    assert ("chain: T -> S (init_from, take model): 40 run(s), each submitted at once with "
            "--dependency=afterok:<its source's array task> and --kill-on-invalid-dep=yes") in out
    scripts = out.split("\n### ")[1:]
    assert len(scripts) == 2  # the sources' array, and one of the 40 dependents' arrays: the rest counted
    assert scripts[0].startswith("submission 1 of 41: resource group ") and "--dependency" not in scripts[0]
    assert ": wave 2, after JOB_OF_T-seed1: 1 run(s): S-seed1\n" in scripts[1]
    assert "#SBATCH --dependency=afterok:JOB_OF_T-seed1" in scripts[1] and "#SBATCH --kill-on-invalid-dep=yes" in scripts[1]
    assert ("(submissions 3 to 41: 39 more arrays like it, 39 run(s), each after its own source's job: S-seed2 "
            "after JOB_OF_T-seed2, S-seed3 after JOB_OF_T-seed3, S-seed4 after JOB_OF_T-seed4, S-seed5 after JOB_OF_T-seed5 ...)") in out
    assert len(out.splitlines()) < 80 + 80  # the runs table, not a line more for each run
    assert main(["submit", str(path), "--executor", "local", "--dry-run"]) == 0
    out = capsys.readouterr().out  # the local queue starts each dependent after its source: one array a wave
    assert "each started once its source has its result" in out and "JOB_OF_" not in out
    assert out.count("\n### submission ") == 2 and "### submission 2 of 2: resource group " in out

    assert main(["submit", str(path), "--executor", "slurm", "--dry-run", "--only", "S-seed1"]) == 0
    out = capsys.readouterr().out  # as the submit: a dependent whose source is not submitted is held back
    assert ("warning: skip S-seed1: its source T-seed1 has no result and is not submitted now (it was never "
            "submitted (left out by --only?): include it, e.g. --only T-seed1,S-seed1)\nnothing to submit") in out


def test_the_dry_run_names_the_runs_a_job_cap_leaves_to_the_feeder(
        capped: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811 - the fixture
        capsys: pytest.CaptureFixture[str]) -> None:
    path, experiment = chain_study(tmp_path, monkeypatch)
    assert main(["submit", str(path), "--executor", "fake", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert ("job cap MaxSubmitJobs=4: 4 slot(s) free: 3 run(s) wait for a slot (S 3), fed in matrix order "
            "(sources first) by a feeder job on partition cpu (the profile's feeder_partition)") in out
    assert out.count("wave 2 after T-seed") == 3 and out.count(", waits for a slot") == 3
    assert out.count("\n### ") == 1 and "3 run(s): T-seed1, T-seed2, T-seed3" in out
    assert not experiment.path.exists()  # a dry run writes nothing
