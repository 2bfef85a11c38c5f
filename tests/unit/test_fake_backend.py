"""A third backend, in this one file: registered at test time, it takes submit, status and cancel
through the real `orchestrate` commands, with no other change to the code (orchestrator/backends/)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.backends import registry
from orchestrator.backends.base import Group, Limits, SchedState
from orchestrator.cli import main
from orchestrator.experiment.manifest import Attempt, Manifest, Submission

JOBS: dict[str, str] = {}  # job id -> state: the fake scheduler's memory
STATE_QUERIES: list[list[str]] = []  # run ids asked about, one list a states() call


class FakeBackend:
    name: str = "fake"
    initial_attempt_state: str | None = None

    def available(self) -> bool:
        return True

    def unavailable_reason(self) -> str:
        return "never"

    def wait_interval_s(self, asked_s: float) -> float:
        return 0.01

    def limits(self, matrix: object, new_jobs: int, dry_run: bool = False) -> Limits:
        return Limits(max_array_size=1, notes=[f"fake: {new_jobs} jobs, one a submission"])

    def submit(self, group: Group) -> list[str | None]:
        ids: list[str | None] = []
        for _ in group.runs:
            job_id = f"fake-{len(JOBS)}"
            JOBS[job_id] = "pending"
            ids.append(job_id)
        return ids

    def launch(self, group: Group, submission: Submission, save: Callable[[], None]) -> None:
        """The fake scheduler runs nothing."""

    def find_submitted(self, submission: Submission) -> dict[int, str]:
        return {}

    def states(self, manifest: Manifest, attempts: dict[str, Attempt]) -> tuple[dict[str, SchedState], str | None]:
        STATE_QUERIES.append(sorted(attempts))
        return {run_id: SchedState(state=JOBS[str(a.job_id)], source="fake")
                for run_id, a in attempts.items() if a.job_id in JOBS}, None

    def cancel(self, manifest: Manifest, attempts: dict[str, Attempt]) -> None:
        for attempt in attempts.values():
            JOBS[str(attempt.job_id)] = "cancelled"

    def dry_run(self, group: Group) -> str:
        return f"# fake scheduler: {len(group.runs)} run(s) as {group.job_name}"


@pytest.fixture
def fake() -> Iterator[None]:
    JOBS.clear()
    STATE_QUERIES.clear()
    with registry.register("fake", FakeBackend):
        yield


MATRIX = """
    experiment: fakestudy
    root: {root}
    cluster: example-t4
    executor: local
    defaults: {data: {synthetic: {}}, precision: fp16}
    runs:
      A1: {}
      A2: {learning_rate: 1.0e-4}
"""


def status_rows(experiment_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, tuple[str, str]]:
    assert main(["status", str(experiment_dir), "--json"]) == 0
    return {r["run_name"]: (r["state"], r["job_id"]) for r in json.loads(capsys.readouterr().out)["runs"]}


def test_a_third_backend_submits_reports_and_cancels(fake: None, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(MATRIX).replace("{root}", str(tmp_path / "scratch")))
    experiment_dir = tmp_path / "scratch" / "fakestudy"

    assert main(["submit", str(path), "--executor", "fake", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "executor fake" in out and out.count("# fake scheduler: 1 run(s) as orc.fakestudy.TOKEN") == 2
    assert "note: fake: 2 jobs, one a submission" in out and not JOBS  # a dry run submits nothing

    assert main(["submit", str(path), "--executor", "fake"]) == 0
    out = capsys.readouterr().out
    assert "submitted 1 run(s) as fake job fake-0" in out and "submitted 1 run(s) as fake job fake-1" in out
    assert "warning: fake: 2 jobs, one a submission" in out
    manifest = json.loads((experiment_dir / "manifest.json").read_text())
    assert [s["executor"] for s in manifest["submissions"].values()] == ["fake", "fake"]

    JOBS["fake-0"] = "running"
    STATE_QUERIES.clear()
    assert status_rows(experiment_dir, capsys) == {"A1": ("running", "fake-0"), "A2": ("pending", "fake-1")}
    assert len(STATE_QUERIES) == 1 and len(STATE_QUERIES[0]) == 2  # one query for every run

    assert main(["cancel", str(experiment_dir), "A1"]) == 0
    assert capsys.readouterr().out.strip() == "cancelled 1 run(s): A1"
    assert JOBS == {"fake-0": "cancelled", "fake-1": "pending"}
    assert status_rows(experiment_dir, capsys) == {"A1": ("cancelled", "fake-0"), "A2": ("pending", "fake-1")}

    assert main(["submit", str(path), "--executor", "fake"]) == 0  # A2 is still active: never submitted twice
    out = capsys.readouterr().out
    assert "skip A2: pending" in out and "1 failed before (resubmit with --retry-failed)" in out
    assert len(JOBS) == 2


def test_an_unregistered_executor_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(MATRIX).replace("{root}", str(tmp_path / "scratch")))
    with pytest.raises(SystemExit) as exit_info:
        main(["submit", str(path), "--executor", "fake"])
    assert exit_info.value.code == 2 and "invalid choice: 'fake'" in capsys.readouterr().err


def test_a_registered_backend_can_be_named_in_the_matrix_and_an_unregistered_one_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(MATRIX).replace("{root}", str(tmp_path / "scratch"))
                    .replace("executor: local", "executor: fake"))
    assert main(["submit", str(path), "--dry-run"]) == 2
    assert "executor: 'fake' is not one of auto, slurm, local" in capsys.readouterr().err
    with registry.register("fake", FakeBackend):
        assert main(["submit", str(path), "--dry-run"]) == 0
        assert "executor fake" in capsys.readouterr().out


def test_submit_records_the_sources_status_names(fake: None, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """submit writes which runs start from another (manifest "sources"); status names the source from
    that record, reading no spec.json (status of 10,000 runs read each unfinished run's)."""
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(MATRIX).replace("{root}", str(tmp_path / "scratch"))
                    .replace("A2: {learning_rate: 1.0e-4}", "A2: {init_from: {run: A1}}"))
    experiment_dir = tmp_path / "scratch" / "fakestudy"
    assert main(["submit", str(path), "--executor", "fake"]) == 0
    capsys.readouterr()
    manifest = json.loads((experiment_dir / "manifest.json").read_text())
    ids = manifest["current_runs"]
    assert manifest["sources"]["of"] == {ids["A2"]: {"run_id": ids["A1"], "run_name": "A1"}}
    assert manifest["sources"]["matrix_sha256"] == manifest["matrix_sha256"]
    (experiment_dir / "runs" / ids["A2"] / "spec.json").unlink()
    assert main(["status", str(experiment_dir), "--json"]) == 0
    rows = {r["run_name"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert rows["A2"]["state"] == "pending" and rows["A2"]["reason"] == "waiting for source run A1 pending"
