"""Faults injected for real against the local SLURM cluster: time limit, preemption, scontrol requeue,
a killed and a hung worker, NaN loss, orchestrate killed mid-submit, concurrent submits,
accounting down. Each checks the end state: every run finished once, results complete."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

from orchestrator.backends.slurm import commands as slurm
from tests.integration.tiny import REPO, TINY_DEFAULTS, orchestrate

PROFILE = """
executor: slurm
partitions:
  t4: {gpu_type: t4, gpu_name: fake T4, cuda: false, bf16: false}
resources: {partition: t4, gpus: 0, cpus_per_task: 1, mem_gb: 1.5, time_min: 10, array_parallelism: 8,
            signal_delay_s: 30, max_requeues: 3}
env: {TOKENIZERS_PARALLELISM: "false", HF_HUB_OFFLINE: "1", HF_DATASETS_OFFLINE: "1", OMP_NUM_THREADS: "1"}
"""



def write_faults_profile(tmp_path: Path) -> None:
    """Cluster profile ``faults`` (the test cluster's fake-T4 partition, CPU jobs) beside a matrix in ``tmp_path``."""
    profile = tmp_path / "slurm_templates" / "faults"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    (profile / "preamble.sh.j2").write_text((REPO / "slurm_templates/example-t4/preamble.sh.j2").read_text())


def make_study(tmp_path: Path, runs: str, name: str) -> Path:
    write_faults_profile(tmp_path)
    text = f"experiment: {name}{int(time.time() * 1000) % 10**8}\nroot: {tmp_path / 'scratch'}\ncluster: faults\n"
    (tmp_path / "matrix.yaml").write_text(text + TINY_DEFAULTS + "  seed: 7\n" + "runs:\n" + textwrap.indent(textwrap.dedent(runs), "  "))
    return tmp_path


def rows(cwd: Path, *extra: str) -> dict[str, dict]:
    return {r["run_name"]: r for r in json.loads(orchestrate(cwd, "status", "--json", *extra).stdout)["runs"]}


def wait_until(cwd: Path, predicate, timeout_s: float, what: str, *extra: str) -> dict[str, dict]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        current = rows(cwd, *extra)
        if predicate(current):
            return current
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}:\n" + orchestrate(cwd, "status").stdout)


def run_dir(cwd: Path, run: dict) -> Path:
    return next((cwd / "scratch").glob(f"*/runs/{run['run_id']}"))


def result(cwd: Path, run: dict) -> dict:
    return json.loads((run_dir(cwd, run) / "result.json").read_text())


def heartbeat(cwd: Path, run: dict) -> dict:
    path = run_dir(cwd, run) / "heartbeat.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _elapsed_s(job_id: str) -> int:
    return slurm.squeue_states([job_id])[job_id].elapsed_s or 0


@pytest.mark.timeout(3000)  # 1,150 s on the 2-core CI machine: time limits are whole minutes
def test_time_limit_checkpoints_requeues_and_matches_uninterrupted(tmp_path: Path, slurm_cluster: None) -> None:
    """A real time limit, placed where the run has made progress: once LIMIT has trained a while, its
    TimeLimit is cut so that SLURM's --signal warning (USR2, 60 s before the limit) comes mid-training.
    Timing no longer depends on how fast this machine is. After the requeue the limit is restored. FULL, the
    uninterrupted twin, gets an hour: on a busy machine 5000 steps can pass the default 10 minutes."""
    study = make_study(tmp_path, """
        LIMIT: {max_steps: 5000, save_steps: 100000, logging_steps: 50, resources: {signal_delay_s: 60},
                dataloader_workers: 2}
        FULL: {max_steps: 5000, save_steps: 100000, logging_steps: 50, resources: {signal_delay_s: 60, time_min: 60},
               dataloader_workers: 2}
        """, "timeout")
    orchestrate(study, "submit", "matrix.yaml")
    current = wait_until(study, lambda r: (heartbeat(study, r["LIMIT"]).get("step") or 0) > 100, 300, "step > 100")
    job_id = current["LIMIT"]["job_id"]
    limit_min = (_elapsed_s(job_id) + 120 + 59) // 60  # the warning comes 60-90 s from now, the limit after
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={limit_min}"], check=True)
    wait_until(study, lambda r: heartbeat(study, r["LIMIT"]).get("state") == "checkpointing", 300, "the USR2 save")
    deadline = time.time() + 120
    while time.time() < deadline:  # requeued: pending again; give the next attempt room to finish
        restored = subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=60"], capture_output=True,
                                  check=False)
        if restored.returncode == 0 and slurm.squeue_states([job_id])[job_id].state == "pending":
            break
        time.sleep(2)
    done = wait_until(study, lambda r: all(x["ended"] for x in r.values()), 1800, "both runs to end")
    assert {x["state"] for x in done.values()} == {"completed"}, done
    limited, full = result(study, done["LIMIT"]), result(study, done["FULL"])
    assert limited["train"]["steps"] == full["train"]["steps"] == 5000
    assert limited["train"].get("resumed_from_step"), "the time-limited run must have resumed from a checkpoint"
    assert limited["train"]["samples"] == full["train"]["samples"], "each step's samples counted once"
    assert full["train"].get("resumed_from_step") in (None, 0)
    # Resumed, the run is its twin: same batches, same dropout, so every logged loss and every metric agree
    # (a CPU run with one thread is deterministic; the worker's loaders never draw from the global RNG).
    curves = {name: {m["step"]: m["loss"] for m in map(json.loads, (run_dir(study, done[name]) / "metrics.jsonl")
                                                      .read_text().splitlines()) if "loss" in m}
              for name in ("LIMIT", "FULL")}
    assert sorted(curves["LIMIT"]) == sorted(curves["FULL"])
    # A logged loss is the mean since the previous log; the first one after a resume averages fewer steps. On a
    # loaded machine the resumed attempt can reach its limit too (seen in a CI rehearsal): every resume counts.
    log = (run_dir(study, done["LIMIT"]) / "worker.log").read_text()
    resumes = [int(step) for step in re.findall(r"resuming from \S*checkpoint-(\d+)", log)]
    assert resumes and resumes[-1] == limited["train"]["resumed_from_step"], (resumes, limited["train"])
    whole = [step for step in curves["FULL"] if not any(step - 50 < resumed_at < step for resumed_at in resumes)]
    assert max(whole) == 5000 and min(whole) == 1
    assert [curves["LIMIT"][step] for step in whole] == pytest.approx([curves["FULL"][step] for step in whole],
                                                                      rel=1e-4), "the loss curves part"
    for key in ("f1", "exact", "HasAns_f1"):
        assert limited["metrics"][key] == pytest.approx(full["metrics"][key], abs=1e-6), key
    attempts = (run_dir(study, done["LIMIT"]) / "attempts.jsonl").read_text().splitlines()
    assert sum('"finish"' in line for line in attempts) == 1 and sum('"start"' in line for line in attempts) >= 2
    assert "received SIGUSR2" in log and "this job is timed-out" not in log.split("received SIGUSR2")[0]


@pytest.mark.parametrize("workers", [0, 2])  # 2: the default; SLURM's SIGTERM reaches the loader workers too
def test_scontrol_requeue_resumes_from_periodic_checkpoint(tmp_path: Path, slurm_cluster: None, workers: int) -> None:
    study = make_study(tmp_path, f"R: {{max_steps: 600, save_steps: 50, dataloader_workers: {workers}}}\n", "requeue")
    orchestrate(study, "submit", "matrix.yaml")
    current = wait_until(study, lambda r: (heartbeat(study, r["R"]).get("step") or 0) > 120, 240, "step > 120")
    step_at_requeue = heartbeat(study, current["R"])["step"]
    subprocess.run(["scontrol", "requeue", current["R"]["job_id"]], check=True)
    done = wait_until(study, lambda r: r["R"]["ended"], 600, "the requeued run to end")
    assert done["R"]["state"] == "completed", done
    final = result(study, done["R"])
    # requeue sends SIGTERM (KillWait before SIGKILL): the worker saves there, past the periodic save
    assert final["train"]["steps"] == 600 and (final["train"].get("resumed_from_step") or 0) >= step_at_requeue
    # the figures are the run's: every step's samples (8 a batch, an epoch's last batch maybe fewer) counted
    # once, not only those after the requeue (at most 480 steps); the requeue counted (same job id)
    assert 0.9 * 600 * 8 < final["train"]["samples"] <= 600 * 8 and final["resume"]["attempts"] == 2, final
    assert final["resume"]["requeues"] == 1 and final["train"]["attempts_timed"] == 2, final["resume"]


def test_preemption_saves_in_the_grace_time_and_resumes(tmp_path: Path, slurm_cluster: None) -> None:
    """Real preemption: a job in the higher-tier 'urgent' partition needs the whole node, so SLURM requeues
    the run. As on most clusters, the only warning is SIGTERM, GraceTime (60 s) before SIGKILL. There is no
    periodic checkpoint (save_steps is past the end): the resumed step can only come from the save made
    in the grace time. The default two data-loader worker processes get the SIGTERM too."""
    study = make_study(tmp_path, "P: {max_steps: 3000, save_steps: 100000, logging_steps: 50, dataloader_workers: 2}\n",
                       "preempt")
    orchestrate(study, "submit", "matrix.yaml")
    current = wait_until(study, lambda r: (heartbeat(study, r["P"]).get("step") or 0) > 100, 300, "step > 100")
    urgent = subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--exclusive", "--time=2",
                             "--output=/dev/null", "--wrap", "sleep 5"],
                            capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    done = wait_until(study, lambda r: r["P"]["ended"], 900, "the preempted run to end")
    assert done["P"]["state"] == "completed", done
    final = result(study, done["P"])
    assert final["train"]["steps"] == 3000
    assert (final["train"].get("resumed_from_step") or 0) > 100, final["train"]
    attempts = (run_dir(study, done["P"]) / "attempts.jsonl").read_text().splitlines()
    assert sum('"start"' in line for line in attempts) == 2 and sum('"finish"' in line for line in attempts) == 1
    assert "received SIGTERM" in (run_dir(study, done["P"]) / "worker.log").read_text()
    states = subprocess.run(["sacct", "-X", "-n", "-P", "-D", "-j", f"{current['P']['job_id']},{urgent}", "-o",
                             "JobID,State"], capture_output=True, text=True, check=True).stdout
    assert "PREEMPTED" in states and f"{urgent}|COMPLETED" in states, states


def test_killed_and_hung_workers_then_retry_failed(tmp_path: Path, slurm_cluster: None) -> None:
    study = make_study(tmp_path, """
        K: {max_steps: 600, save_steps: 50}
        NAN: {max_steps: 200, learning_rate: 1.0e+12}
        """, "killed")
    orchestrate(study, "submit", "matrix.yaml")
    current = wait_until(study, lambda r: (heartbeat(study, r["K"]).get("step") or 0) > 120, 240, "step > 120")
    pid = heartbeat(study, current["K"])["pid"]
    os.kill(pid, signal.SIGSTOP)  # hung: no more heartbeats
    try:
        stalled = wait_until(study, lambda r: r["K"]["state"] == "stalled", 60, "stalled", "--stall-after", "6")
        assert "no heartbeat" in stalled["K"]["reason"]
    finally:
        os.kill(pid, signal.SIGKILL)  # then killed outright
    done = wait_until(study, lambda r: all(x["ended"] for x in r.values()), 240, "both ended")
    assert done["K"]["state"] in ("failed", "cancelled"), done["K"]  # never "running" forever
    assert done["NAN"]["state"] == "failed" and done["NAN"]["reason"].startswith("nan_loss"), done["NAN"]
    failure = json.loads((run_dir(study, done["NAN"]) / "failure.json").read_text())
    assert failure["hint"] and failure["traceback_tail"]

    again = orchestrate(study, "submit", "matrix.yaml")
    assert "0 new" in again.stdout and "2 failed before" in again.stdout, again.stdout
    retry = orchestrate(study, "submit", "matrix.yaml", "--retry-failed", "--only", "K")
    assert "1 new" in retry.stdout, retry.stdout
    done = wait_until(study, lambda r: r["K"]["ended"], 300, "the retried run")
    assert done["K"]["state"] == "completed"
    final = result(study, done["K"])
    assert final["train"]["steps"] == 600 and (final["train"].get("resumed_from_step") or 0) >= 50


def test_concurrent_submits_submit_each_run_once(tmp_path: Path, slurm_cluster: None) -> None:
    study = make_study(tmp_path, "A: {max_steps: 4, save_steps: 100, grid: {seed: [1, 2, 3, 4]}}\n", "race")
    outputs: list[str] = []

    def go() -> None:
        outputs.append(orchestrate(study, "submit", "matrix.yaml").stdout)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(o.split(" new")[0].rsplit(" ", 1)[-1]) for o in outputs) == [0, 0, 4], outputs
    manifest = json.loads(next((study / "scratch").glob("*/manifest.json")).read_text())
    assert len(manifest["submissions"]) == 1
    assert all(len(r["attempts"]) == 1 for r in manifest["runs"].values())
    wait_until(study, lambda r: all(x["ended"] for x in r.values()), 300, "runs to end")


def test_status_falls_back_to_squeue_when_accounting_is_down(tmp_path: Path, slurm_cluster: None) -> None:
    study = make_study(tmp_path, "A: {max_steps: 2000, save_steps: 10000}\n", "nodb")
    orchestrate(study, "submit", "matrix.yaml")
    wait_until(study, lambda r: r["A"]["state"] == "running", 120, "running")
    subprocess.run(["pkill", "-x", "slurmdbd"], check=False)
    try:
        time.sleep(1)
        out = json.loads(orchestrate(study, "status", "--json").stdout)
        assert out["note"] and "sacct unavailable" in out["note"], out
        assert out["runs"][0]["state"] == "running"
    finally:
        subprocess.run(["bash", str(REPO / "tests/slurm/start-cluster.sh")], check=True, capture_output=True)
        orchestrate(study, "cancel")
