"""Submit at scale (issue 15): the controller's MaxJobCount as a job cap, read from recorded `scontrol show
config` output; one manifest write a job array; spec.json through orjson, synced once."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from jobs.contract.atomic import sync_filesystem, write_model_json_atomic
from orchestrator import feed
from orchestrator.backends.base import Group
from orchestrator.backends.slurm import commands
from orchestrator.backends.slurm.backend import SlurmBackend
from orchestrator.backends.slurm.parse import max_job_count, parse_config
from orchestrator.cli import main
from orchestrator.experiment.manifest import Manifest
from orchestrator.experiment.store import Experiment
from tests.unit.test_fake_backend import JOBS, FakeBackend, fake  # noqa: F401 - fake is a fixture
from tests.unit.test_job_cap import capped, study  # noqa: F401 - capped is a fixture

CONFIG = (Path(__file__).parent / "data" / "slurm" / "scontrol_show_config.txt").read_text()  # MaxJobCount = 10000


def fake_slurm(monkeypatch: pytest.MonkeyPatch, held: int, max_submit: commands.SubmitCap | None = None) -> None:
    """scontrol prints the recorded config; squeue lists ``held`` jobs (every user's, finished ones too)."""
    def run(args: list[str], timeout_s: float = 0) -> str:
        if args[:3] == ["scontrol", "show", "config"]:
            return CONFIG
        assert args == ["squeue", "-h", "-r", "-t", "all", "-o", "%i"], args
        return "".join(f"{1000 + i}\n" for i in range(held))

    monkeypatch.setattr(commands, "_run", run)
    monkeypatch.setattr(commands, "submit_cap", lambda *_: max_submit)


def matrix(max_array_size: int | None = None) -> SimpleNamespace:
    resources = SimpleNamespace(account=None, qos=None)
    return SimpleNamespace(runs=[SimpleNamespace(resources=resources)],
                           profile=SimpleNamespace(max_array_size=max_array_size))


def test_max_job_count_is_read_from_the_controller_config() -> None:
    assert max_job_count(parse_config(CONFIG)) == 10000
    assert max_job_count({}) is None and max_job_count({"MaxJobCount": "(null)"}) is None


def test_the_tenth_array_of_a_10000_run_study_waits_for_a_slot_instead_of_being_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/README: with 9,004 tasks held, sbatch refused an array of 996 (9,004 + 996 reaches
    MaxJobCount=10,000). The free room is 10,000 - 1 - 9,004 = 995: 994 runs now, one slot for the feeder."""
    fake_slurm(monkeypatch, held=9004)
    limits = SlurmBackend().limits(matrix(), 996)  # type: ignore[arg-type]
    assert limits.free_slots == 995 and limits.max_array_size == 1001
    assert limits.cap == "MaxJobCount=10000 (the controller's, every user's jobs)"
    assert limits.notes == [("996 new jobs, 995 free under MaxJobCount=10000 (the controller's, every user's "
                             "jobs): the rest wait for a slot and a feeder job submits them as runs end "
                             "(orchestrate status: waiting for a slot)")]


def test_the_stricter_of_max_submit_jobs_and_max_job_count_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    user_cap = commands.SubmitCap(limit=25, free=20, where="MaxSubmitJobs=25 (association root/capstudy)")
    fake_slurm(monkeypatch, held=100, max_submit=user_cap)
    assert SlurmBackend().limits(matrix(), 30).cap.startswith("MaxSubmitJobs=25")  # type: ignore[arg-type]
    fake_slurm(monkeypatch, held=9990, max_submit=user_cap)
    limits = SlurmBackend().limits(matrix(max_array_size=7), 30)  # type: ignore[arg-type]
    assert (limits.free_slots, limits.max_array_size) == (9, 7) and limits.cap.startswith("MaxJobCount=10000")
    fake_slurm(monkeypatch, held=20000)  # more held than the limit (it was lowered since): no room, never negative
    assert SlurmBackend().limits(matrix(), 1).free_slots == 0  # type: ignore[arg-type]


class CountingBackend(FakeBackend):
    """The fake scheduler, one run an array; records what the manifest on disk says at each sbatch."""

    name = "counting"
    seen: ClassVar[list[list[str]]] = []

    def submit(self, group: Group) -> list[str | None]:
        on_disk = json.loads(group.experiment.manifest_path.read_text())
        self.seen.append(sorted(s["state"] for s in on_disk["submissions"].values()))  # keyed by token: sort
        return super().submit(group)


def test_one_manifest_write_a_job_array_and_each_submission_on_record_before_its_sbatch(
        fake: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 - the fixture
    from orchestrator.backends import registry

    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent("""
        experiment: writes
        root: {root}
        cluster: example-t4
        defaults: {{data: {{synthetic: {{}}}}, precision: fp16}}
        grid: {{seed: [1, 2, 3]}}
        runs: {{A: {{}}}}
        """).format(root=tmp_path / "scratch"))
    writes: list[int] = []
    write = Experiment.write_manifest

    def counted(self: Experiment, manifest: Manifest) -> None:
        writes.append(1)
        write(self, manifest)

    monkeypatch.setattr(Experiment, "write_manifest", counted)
    CountingBackend.seen = []
    with registry.register("counting", CountingBackend):
        assert main(["submit", str(path), "--executor", "counting"]) == 0
    assert len(JOBS) == 3 and len(writes) == 4  # before each of the 3 sbatch calls, and once at the end (was 8)
    assert CountingBackend.seen == [["submitting"], ["submitted", "submitting"],
                                    ["submitted", "submitted", "submitting"]]
    manifest = Experiment(tmp_path / "scratch" / "writes").read_manifest()
    assert [s.state for s in manifest.submissions.values()] == ["submitted"] * 3
    assert sorted(str(a.job_id) for r in manifest.runs.values() for a in r.attempts) == ["fake-0", "fake-1", "fake-2"]


def test_spec_json_through_orjson_is_the_same_json(tmp_path: Path) -> None:
    data = {"b": [1.0e-5, 3e-05, 0.1, None, True], "a": {"z": "ünïcödé", "y": 2**40}, "lr": 5e-324}
    write_model_json_atomic(tmp_path / "x.json", data, durable=False)
    sync_filesystem(tmp_path)
    text = (tmp_path / "x.json").read_text(encoding="utf-8")
    assert json.loads(text) == data and text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    with pytest.raises(TypeError, match="x.json: not JSON data"):
        write_model_json_atomic(tmp_path / "x.json", {"a": object()})
    write_model_json_atomic(tmp_path / "x.json", {"a": [1.0, {"b": float("nan")}]})  # as json writes it: not null
    assert (tmp_path / "x.json").read_text() == json.dumps({"a": [1.0, {"b": float("nan")}]}, indent=2) + "\n"


def test_a_feeder_with_no_room_waits_for_finished_jobs_to_leave_the_count(
        capped: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 - the fixture
    """The runs a feeder waited for have ended, but the controller still counts them (MinJobAge): it waits,
    outside the lock, until a run and the next feeder fit, instead of ending the chain."""
    path, experiment = study(tmp_path, monkeypatch)
    assert main(["submit", str(path), "--executor", "fake"]) == 0  # 3 runs + the feeder fill CAP=4
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # meanwhile the runs end and leave the count
        slept.append(seconds)
        JOBS.update({job_id: "completed" for job_id in JOBS})

    feed.wait_for_room(experiment, wait_s=600, poll_s=30, sleep=sleep)
    assert slept == [30]
    feed.wait_for_room(experiment, wait_s=600, poll_s=30, sleep=sleep)  # room now: no wait
    assert slept == [30]
    JOBS.update({job_id: "pending" for job_id in JOBS})
    feed.wait_for_room(experiment, wait_s=60, poll_s=30, sleep=slept.append)  # never room: gives up after wait_s
    assert slept == [30, 30, 30]
