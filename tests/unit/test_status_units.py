"""status: how run-directory files and the scheduler's answer combine (scheduler faked here;
the real one is exercised in tests/integration)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from jobs.contract import RunDir
from orchestrator import status
from orchestrator.backends.slurm import commands as slurm
from orchestrator.backends.slurm import parse as slurm_parse
from orchestrator.experiment.manifest import Manifest
from orchestrator.experiment.store import Experiment


def make_experiment(tmp_path: Path, runs: dict[str, str | None]) -> Experiment:
    experiment = Experiment(tmp_path / "exp")
    manifest = {"experiment": "exp", "current_runs": {}, "runs": {}, "submissions": {}}
    for index, (name, job_id) in enumerate(runs.items()):
        run_id = f"{name}-abcdef{index:02d}"
        manifest["current_runs"][name] = run_id
        attempts = [{"job_id": job_id, "submission": "tok", "submitted_at": time.time(), "executor": "slurm"}] if job_id else []
        manifest["runs"][run_id] = {"run_name": name, "attempts": attempts}
        experiment.run_dir(run_id).path.mkdir(parents=True)
    experiment.write_manifest(Manifest.model_validate(manifest))
    return experiment


def fake_sacct(monkeypatch: pytest.MonkeyPatch, states: dict[str, str], calls: list[list[str]],
               elapsed_s: dict[str, int] | None = None) -> None:
    def sacct_states(job_ids: list[str], start_time: str | None = None) -> dict[str, slurm_parse.JobState]:
        calls.append(job_ids)
        return {j: slurm_parse.JobState(j, s, s.upper(), 0, (elapsed_s or {}).get(j, 12), "node1", None, None, None)
                for j, s in states.items()}

    monkeypatch.setattr(slurm, "sacct_states", sacct_states)


def rows_by_name(experiment: Experiment) -> dict[str, status.RunStatus]:
    return {r.run_name: r for r in status.gather(experiment)[0]}


def test_one_scheduler_query_and_state_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = make_experiment(tmp_path, {"done": "10_0", "exit0": "10_1", "run": "10_2", "stall": "10_3",
                                            "oom": "10_4", "timeout": "11", "new": None})
    calls: list[list[str]] = []
    fake_sacct(monkeypatch, {"10_0": "completed", "10_1": "completed", "10_2": "running", "10_3": "running",
                             "10_4": "failed", "11": "timeout"}, calls, elapsed_s={"10_3": 7200})
    ids = json.loads(experiment.manifest_path.read_text())["current_runs"]
    RunDir(experiment.runs_dir / ids["done"]).write_result({"metrics": {"f1": 50.0}, "warnings": [], "train": {"steps": 9, "planned_steps": 9}})
    RunDir(experiment.runs_dir / ids["run"]).write_heartbeat("training", step=3, total_steps=9)
    stale = RunDir(experiment.runs_dir / ids["stall"])
    stale.write_heartbeat("training", step=1, total_steps=9)
    beat = json.loads(stale.heartbeat_path.read_text())
    beat["updated_at"] -= 3600
    stale.heartbeat_path.write_text(json.dumps(beat))
    RunDir(experiment.runs_dir / ids["oom"]).write_failure("cuda_oom", "CUDA out of memory", hint="smaller batch_size")
    rows = rows_by_name(experiment)
    assert len(calls) == 1 and sorted(calls[0]) == ["10", "11"]  # one sacct for every array and job
    assert rows["done"].state == "completed" and rows["done"].step == 9
    assert rows["exit0"].state == "failed" and "without result.json" in rows["exit0"].reason  # COMPLETED is not success
    assert rows["run"].state == "running" and (rows["run"].step, rows["run"].total_steps) == (3, 9)
    assert rows["stall"].state == "stalled" and "no heartbeat for 60 min" in rows["stall"].reason
    assert rows["oom"].state == "failed" and rows["oom"].reason == "cuda_oom: CUDA out of memory (hint: smaller batch_size)"
    assert rows["timeout"].state == "timeout"
    assert rows["new"].state == "not submitted"
    text = status.render(list(rows.values()), None)
    assert "1 completed" in text and "1 stalled" in text


def test_fallback_to_squeue_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = make_experiment(tmp_path, {"a": "20_0"})

    def broken(job_ids: list[str], start_time: str | None = None) -> dict:
        raise slurm.SlurmError(["sacct"], 1, "Slurm accounting storage is disabled")

    monkeypatch.setattr(slurm, "sacct_states", broken)
    monkeypatch.setattr(slurm, "squeue_states", lambda ids: {"20_0": slurm_parse.JobState("20_0", "pending", "PENDING", None, 0, None, None, None, "Priority")})
    rows, note = status.gather(experiment)
    assert rows[0].state == "pending" and rows[0].reason == "Priority"
    assert note is not None and note.startswith("sacct unavailable (") and "squeue" in note


def test_warnings_are_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = make_experiment(tmp_path, {"A4-b": "30_0"})
    fake_sacct(monkeypatch, {"30_0": "completed"}, [])
    run_id = json.loads(experiment.manifest_path.read_text())["current_runs"]["A4-b"]
    RunDir(experiment.runs_dir / run_id).write_result({"metrics": {"f1": 26.9}, "warnings": ["HasAns_f1 collapsed"]})
    text = status.render(status.gather(experiment)[0], None)
    assert "completed (warn)" in text and "HasAns_f1 collapsed" in text


def test_manifest_never_missing_while_it_is_rewritten(tmp_path: Path) -> None:
    """A reader must never find manifest.json absent between the backup and the new version
    (a --wait loop once saw an empty experiment that way and stopped early)."""
    import threading

    experiment = make_experiment(tmp_path, {"a": "1"})
    stop = threading.Event()
    missing: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            if not experiment.manifest_path.exists():
                missing.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    manifest = experiment.read_manifest()
    for _ in range(300):
        experiment.write_manifest(manifest)
    stop.set()
    thread.join()
    assert not missing
    assert (tmp_path / "exp" / "manifest.json.bak").is_file()


def test_preempted_in_accounting_but_queued_again_is_not_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM requeues a preempted job itself; until the new record reaches accounting, sacct says
    PREEMPTED. Only those jobs are checked with squeue: queued again is pending, gone is preempted."""
    experiment = make_experiment(tmp_path, {"back": "30_0", "gone": "30_1", "ok": "30_2"})
    calls: list[list[str]] = []
    fake_sacct(monkeypatch, {"30_0": "preempted", "30_1": "preempted", "30_2": "running"}, calls)
    asked: list[list[str]] = []

    def squeue_states(job_ids: list[str]) -> dict[str, slurm_parse.JobState]:
        asked.append(sorted(job_ids))
        return {"30_0": slurm_parse.JobState("30_0", "pending", "PENDING", None, 0, None, None, None, "BeginTime"),
                "30_1": slurm_parse.JobState("30_1", "preempted", "PREEMPTED", 0, 9, "n", None, None, None)}

    monkeypatch.setattr(slurm, "squeue_states", squeue_states)
    rows = rows_by_name(experiment)
    assert asked == [["30_0", "30_1"]]
    assert rows["back"].state == "pending" and not rows["back"].ended and rows["back"].reason == "BeginTime"
    assert rows["gone"].state == "preempted" and rows["gone"].ended
    assert rows["ok"].state == "running"


def _age(experiment: Experiment, seconds: float) -> None:
    manifest = experiment.read_manifest()
    for run in manifest.runs.values():
        for attempt in run.attempts:
            attempt.submitted_at -= seconds
    experiment.write_manifest(manifest)


def test_accounting_lag_asks_squeue_before_saying_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sacct has no row yet for an old submission: the controller is asked, once, for those jobs only.
    Listed there is pending; unknown to both is lost; squeue failing too is unknown, never lost."""
    experiment = make_experiment(tmp_path, {"queued": "40_0", "gone": "41", "seen": "42"})
    _age(experiment, 600)
    fake_sacct(monkeypatch, {"42": "running"}, [])
    asked: list[list[str]] = []

    def squeue_states(job_ids: list[str]) -> dict[str, slurm_parse.JobState]:
        asked.append(sorted(job_ids))
        return {"40_0": slurm_parse.JobState("40_0", "pending", "PENDING", None, 0, None, None, None, "JobHeldUser")}

    monkeypatch.setattr(slurm, "squeue_states", squeue_states)
    rows = rows_by_name(experiment)
    assert asked == [["40_0", "41"]]
    assert rows["queued"].state == "pending" and rows["queued"].reason == "JobHeldUser" and not rows["queued"].ended
    assert rows["gone"].state == "lost" and rows["gone"].ended
    assert rows["seen"].state == "running"

    def down(job_ids: list[str]) -> dict:
        raise slurm.SlurmError(["squeue"], 1, "slurm_load_jobs error: Unable to contact slurm controller")

    monkeypatch.setattr(slurm, "squeue_states", down)
    rows, note = status.gather(experiment)
    by_name = {r.run_name: r for r in rows}
    assert by_name["queued"].state == by_name["gone"].state == "unknown"
    assert not by_name["queued"].ended and "could not be asked" in by_name["queued"].reason
    assert note is not None and note.startswith("squeue unavailable (")


def test_plan_never_resubmits_a_job_slurm_may_still_know(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from orchestrator.experiment.plan import plan

    experiment = make_experiment(tmp_path, {"queued": "50_0", "unknown": "51", "gone": "52"})
    _age(experiment, 600)
    fake_sacct(monkeypatch, {}, [])
    monkeypatch.setattr(slurm, "squeue_states", lambda ids: {
        "50_0": slurm_parse.JobState("50_0", "pending", "PENDING", None, 0, None, None, None, "Priority")})
    manifest = experiment.read_manifest()
    specs = [SimpleNamespace(run_id=run_id, run_name=name, base_name=name)
             for name, run_id in manifest.current_runs.items()]
    result = plan(None, specs, manifest, experiment, retry_failed=True)  # type: ignore[arg-type]
    assert [s.run_name for s, _ in result.active] == ["queued"] and sorted(s.run_name for s in result.new) == ["gone", "unknown"]

    def down(job_ids: list[str]) -> dict:
        raise slurm.SlurmError(["squeue"], 1, "Unable to contact slurm controller")

    monkeypatch.setattr(slurm, "squeue_states", down)
    result = plan(None, specs, manifest, experiment, retry_failed=True, force=frozenset({"gone"}))  # type: ignore[arg-type]
    assert not result.new and [state.split(" ")[0] for _, state in result.active] == ["unknown"] * 3


def test_status_imports_neither_submitit_nor_jinja2_nor_pandas(tmp_path: Path) -> None:
    """A status of a SLURM experiment, in a fresh interpreter (imports are what a user waits for: 0.1-0.3 s
    each on a loaded login node): submitit, jinja2 and pandas are submit's and collect's, never status's.
    The scheduler's commands are absent here (PATH empty of them): status says so and still renders."""
    import subprocess
    import sys

    experiment = make_experiment(tmp_path, {"a": "123_0", "b": None})
    code = ("import sys; from orchestrator.cli import main; code = main(['status', sys.argv[1]]); "
            "print(sorted(m for m in ('submitit', 'jinja2', 'pandas') if m in sys.modules)); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, str(experiment.path)], capture_output=True, text=True,
                          env={"PATH": "/nonexistent", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_a_requeued_attempt_is_not_stalled_by_its_predecessors_heartbeat(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen in the 500-run soak: a run requeued after a preemption shows RUNNING while its new attempt starts
    up; the heartbeat on disk is the killed attempt's, an hour old. The silence counts from the attempt's
    start (SLURM's elapsed time), so it is running; the same heartbeat under a job running for two hours is
    a stall."""
    experiment = make_experiment(tmp_path, {"fresh": "20_0", "stuck": "20_1"})
    ids = json.loads(experiment.manifest_path.read_text())["current_runs"]
    for name in ids:
        run_dir = RunDir(experiment.runs_dir / ids[name])
        run_dir.write_heartbeat("training", step=5, total_steps=40)
        beat = json.loads(run_dir.heartbeat_path.read_text())
        beat["updated_at"] -= 3600
        run_dir.heartbeat_path.write_text(json.dumps(beat))
    fake_sacct(monkeypatch, {"20_0": "running", "20_1": "running"}, [], elapsed_s={"20_0": 20, "20_1": 7200})
    rows = rows_by_name(experiment)
    assert rows["fresh"].state == "running" and rows["fresh"].step == 5
    assert rows["stuck"].state == "stalled" and "no heartbeat for 60 min" in rows["stuck"].reason
