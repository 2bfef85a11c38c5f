"""Job caps (issue 15): the runs beyond MaxSubmitJobs wait for a slot in the manifest and a feeder
job submits them as slots free. A fake capped scheduler and a fake sbatch for the feeder; the real
cluster runs the same path in tests/integration/test_job_cap.py."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.contract import RunSpec
from orchestrator import feed
from orchestrator.backends import registry
from orchestrator.backends.base import Limits
from orchestrator.backends.slurm import commands
from orchestrator.backends.slurm.parse import JobState, parse_submit_limits
from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.experiment.plan import take_slots
from orchestrator.experiment.store import Experiment
from tests.unit.test_fake_backend import JOBS, FakeBackend

CAP = 4
FEEDERS: dict[str, str] = {}  # feeder job id -> state, as squeue would say
SBATCH: list[list[str]] = []  # the feeder's sbatch arguments


class CappedBackend(FakeBackend):
    """The fake scheduler of test_fake_backend, allowing CAP jobs queued at once (the feeder counts as
    one, as SLURM counts it)."""

    def limits(self, matrix: object, new_jobs: int, dry_run: bool = False) -> Limits:
        queued = sum(s in ("pending", "running") for s in [*JOBS.values(), *FEEDERS.values()])
        return Limits(max_array_size=100, free_slots=max(0, CAP - queued), cap=f"MaxSubmitJobs={CAP}")


def fake_sbatch(args: list[str]) -> str:
    SBATCH.append(args)
    job_id = f"9{len(FEEDERS)}"
    FEEDERS[job_id] = "pending"
    return job_id


def fake_squeue(job_ids: list[str]) -> dict[str, JobState]:
    return {j: JobState(j, FEEDERS[j], FEEDERS[j].upper(), None, None, None, None, None, None)
            for j in job_ids if j in FEEDERS}


@pytest.fixture
def capped(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    JOBS.clear()
    FEEDERS.clear()
    SBATCH.clear()
    monkeypatch.setattr(commands, "sbatch", fake_sbatch)
    monkeypatch.setattr(commands, "squeue_states", fake_squeue)
    with registry.register("fake", CappedBackend):
        yield


MATRIX = """
    experiment: capped
    root: {root}
    cluster: example-t4
    executor: local
    resources: {{account: capstudy}}
    defaults: {{data: {{synthetic: {{}}}}, precision: fp16}}
    grid:
      seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    runs:
      A1: {{}}
"""


def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Experiment]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(textwrap.dedent(MATRIX).format(root=tmp_path / "scratch"))
    return tmp_path / "m.yaml", Experiment(tmp_path / "scratch" / "capped")


def states(experiment: Experiment, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str]]:
    assert main(["status", str(experiment.path), "--json"]) == 0
    return [(r["state"], r["reason"]) for r in json.loads(capsys.readouterr().out)["runs"]]


def spec_list(n: int) -> list[RunSpec]:
    return [RunSpec.model_construct(run_id=f"R{i}") for i in range(n)]  # take_slots reads nothing else


def test_take_slots_keeps_one_slot_for_the_feeder_only_when_runs_must_wait() -> None:
    runs = spec_list(10)
    assert take_slots(runs, None) == (runs, [])  # no cap
    assert take_slots(runs, 10) == (runs, [])  # all fit: no feeder needed
    assert take_slots(runs, 4) == (runs[:3], runs[3:])  # 3 runs + the feeder = 4
    assert take_slots(runs, 1) == ([], runs)  # the one slot goes to the feeder (a timed retry)
    assert take_slots(runs, 0) == ([], runs)
    assert take_slots([], 0) == ([], [])


def test_parse_submit_limits_keeps_association_and_qos_apart() -> None:
    assert parse_submit_limits("25|normal\n", "normal|\n") == (25, None)
    assert parse_submit_limits("|normal\n", "normal|300\n") == (None, 300)
    assert parse_submit_limits("500|normal\n40|high\n", "normal|300\nhigh|\n") == (40, 300)
    assert parse_submit_limits("", "") == (None, None)


def test_runs_beyond_the_cap_wait_and_the_feeder_submits_them_nothing_twice(
        capped: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path, experiment = study(tmp_path, monkeypatch)
    assert main(["submit", str(path), "--executor", "fake"]) == 0
    out = capsys.readouterr().out
    assert "10 new" in out and "submitted 3 run(s)" in out
    assert "7 run(s) waiting for a slot: feeder job 90 submits them as runs end (MaxSubmitJobs=4)" in out
    manifest = experiment.read_manifest()
    assert len(manifest.waiting) == 7 and manifest.feeder is not None and manifest.feeder.job_id == "90"
    assert "--dependency=afterany:fake-0:fake-1:fake-2" in SBATCH[0] and "--account=capstudy" in SBATCH[0]
    assert "--partition=cpu" in SBATCH[0]  # the profile's feeder_partition, not the runs' GPU partition t4
    assert SBATCH[0][-1].endswith(f"-m orchestrator.feed {experiment.path}")
    rows = states(experiment, capsys)
    assert [s for s, _ in rows].count("waiting for a slot") == 7 and [s for s, _ in rows].count("pending") == 3
    assert rows[-1][1] == "feeder job 90 submits them as runs end"

    assert main(["submit", str(path), "--executor", "fake"]) == 0  # while the feeder is alive: nothing twice
    out = capsys.readouterr().out
    assert "0 new" in out and "7 run(s) waiting for a slot" in out and len(JOBS) == 3 and len(FEEDERS) == 1

    assert feed.feed(experiment, "77") is None  # not the recorded feeder: does nothing
    for job_id in JOBS:
        JOBS[job_id] = "completed"
    FEEDERS["90"] = "running"
    outcome = feed.feed(experiment, "90")
    assert outcome is not None and [len(s.run_ids) for s in outcome.submissions] == [2]  # 4 - itself - next feeder
    manifest = experiment.read_manifest()
    assert len(manifest.waiting) == 5 and manifest.feeder is not None and manifest.feeder.job_id == "91"
    assert "--dependency=afterany:fake-3:fake-4" in SBATCH[1]
    assert feed.feed(experiment, "90") is None  # the consumed feeder, run twice: nothing twice
    assert all(len(r.attempts) == 1 for r in manifest.runs.values()) and len(manifest.runs) == 5


def test_a_dead_feeder_is_named_in_status_and_the_next_submit_restarts_the_feed(
        capped: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path, experiment = study(tmp_path, monkeypatch)
    assert main(["submit", str(path), "--executor", "fake"]) == 0
    capsys.readouterr()
    FEEDERS["90"] = "cancelled"
    for job_id in JOBS:
        JOBS[job_id] = "completed"
    waiting = [reason for state, reason in states(experiment, capsys) if state == "waiting for a slot"]
    assert len(waiting) == 7
    assert waiting[0] == "feeder job 90 ended (CANCELLED): run `orchestrate submit` again to feed them"
    assert main(["submit", str(path), "--executor", "fake"]) == 0
    out = capsys.readouterr().out
    assert "7 new" in out and "submitted 3 run(s)" in out and "4 run(s) waiting for a slot: feeder job 91" in out
    manifest = experiment.read_manifest()
    assert len(manifest.waiting) == 4 and all(len(r.attempts) == 1 for r in manifest.runs.values())


def test_cancel_forgets_the_waiting_runs_and_cancels_the_feeder_when_none_waits(
        capped: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path, experiment = study(tmp_path, monkeypatch)
    cancelled: list[list[str]] = []
    monkeypatch.setattr(commands, "scancel", cancelled.append)
    assert main(["submit", str(path), "--executor", "fake"]) == 0
    assert main(["cancel", str(experiment.path), "A1-seed10"]) == 0  # one waiting run: the feeder stays
    assert "cancelled 1 run(s): A1-seed10" in capsys.readouterr().out
    manifest = experiment.read_manifest()
    assert len(manifest.waiting) == 6 and manifest.feeder is not None and cancelled == []
    assert main(["cancel", str(experiment.path)]) == 0
    assert "cancelled 9 run(s)" in capsys.readouterr().out  # 3 pending jobs and the 6 waiting runs
    manifest = experiment.read_manifest()
    assert manifest.waiting == [] and manifest.feeder is None and cancelled == [["90"]]
    assert [state for state, _ in states(experiment, capsys)].count("not submitted") == 7


def test_a_feeder_that_cannot_feed_leaves_the_runs_waiting_and_says_why(
        capped: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path, experiment = study(tmp_path, monkeypatch)
    assert main(["submit", str(path), "--executor", "fake"]) == 0
    capsys.readouterr()
    path.unlink()  # the matrix the feeder reloads for the cluster profile is gone
    with pytest.raises(UserError):
        feed.feed(experiment, "90")
    FEEDERS["90"] = "completed"
    waiting = [reason for state, reason in states(experiment, capsys) if state == "waiting for a slot"]
    assert len(waiting) == 7 and waiting[0].startswith("the feeder job failed (job 90: ")
    assert waiting[0].endswith("run `orchestrate submit` again to feed them")
    assert len(experiment.read_manifest().waiting) == 7 and len(JOBS) == 3


def test_a_matrix_edited_after_submit_is_not_fed_silently(
        capped: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path, experiment = study(tmp_path, monkeypatch)
    assert main(["submit", str(path), "--executor", "fake"]) == 0
    capsys.readouterr()
    path.write_text(path.read_text().replace("precision: fp16", "precision: bf16"))
    for job_id in JOBS:
        JOBS[job_id] = "completed"
    with pytest.raises(UserError, match="changed since it was submitted"):
        feed.feed(experiment, "90")
    manifest = experiment.read_manifest()
    assert len(manifest.waiting) == 7 and len(JOBS) == 3  # nothing fed from the edited file
    assert manifest.feeder is not None and "changed since it was submitted" in (manifest.feeder.error or "")


def test_the_cap_is_read_for_the_qos_the_jobs_run_under(monkeypatch: pytest.MonkeyPatch) -> None:
    # an association allowing two QOS, `normal` its default; only `long` caps submissions
    calls: list[list[str]] = []
    replies = {"assoc": "|normal,long|normal\n", "squeue": "1\n2\n"}
    qos_caps = {"normal": "", "long": "5"}

    def fake_run(command: list[str]) -> str:
        calls.append(command)
        if command[:4] == ["sacctmgr", "-n", "-P", "show"] and command[4] == "qos":
            names = command[6].removeprefix("name=").split(",")
            return "".join(f"{name}|{qos_caps[name]}\n" for name in names)
        return replies["assoc"] if "assoc" in command else replies["squeue"]

    monkeypatch.setattr(commands, "_run", fake_run)
    assert commands.submit_cap("me", "lab") is None  # runs under the default QOS `normal`: no cap
    assert "name=normal" in calls[1]
    cap = commands.submit_cap("me", "lab", "long")  # a run that names `long` is capped by it
    assert cap is not None and (cap.limit, cap.free) == (5, 3) and "QOS long" in cap.where
    replies["assoc"] = "|normal,long|\n"  # no default QOS: the strictest allowed one is honoured
    cap = commands.submit_cap("me", "lab")
    assert cap is not None and cap.limit == 5


def test_a_feeder_partition_the_profile_does_not_list_is_refused() -> None:
    from orchestrator.profiles import PartitionInfo, Profile

    with pytest.raises(ValueError, match="feeder_partition 'cpus' is not one of the profile's partitions"):
        Profile(partitions={"t4": PartitionInfo(), "cpu": PartitionInfo(cuda=False)}, feeder_partition="cpus")
