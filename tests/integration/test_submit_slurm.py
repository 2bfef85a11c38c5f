"""End to end against the real local SLURM cluster: orchestrate submit -> status -> collect.

The runs are real: the worker runs the shared trainer (a tiny random BERT on generated
SQuAD-v2 data) inside submitit job arrays that slurmctld schedules on this machine.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

from tests.integration.tiny import REPO, TINY_DEFAULTS, orchestrate

PROFILE = """
description: the test cluster started by tests/slurm/start-cluster.sh
executor: slurm
partitions:
  t4: {gpu_type: t4, gpu_name: fake T4 (no CUDA here), cuda: false, bf16: false}
  cpu: {cuda: false, gpu_name: CPU}
resources: {partition: t4, gpus: 1, gpu_type: t4, cpus_per_task: 1, mem_gb: 1.5, time_min: 10, array_parallelism: 4}
env: {TOKENIZERS_PARALLELISM: "false", HF_HUB_OFFLINE: "1", HF_DATASETS_OFFLINE: "1", OMP_NUM_THREADS: "1"}
"""

MATRIX = """
experiment: {name}
root: {root}
cluster: testcluster
baseline: A1
grid:
  seed: [1, 2]
runs:
  A1: {{attention: eager, max_steps: 6, save_steps: 3}}
  A2: {{extends: A1, attention: sdpa}}
  BAD: {{extends: A1, model_name_or_path: /nonexistent/model}}
"""


@pytest.fixture()
def study(tmp_path: Path, slurm_cluster: None) -> Path:
    profile = tmp_path / "slurm_templates" / "testcluster"
    profile.mkdir(parents=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    (profile / "preamble.sh.j2").write_text((REPO / "slurm_templates/example-t4/preamble.sh.j2").read_text())
    name = f"it{int(time.time())}"
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(MATRIX).format(name=name, root=tmp_path / "scratch") + TINY_DEFAULTS)
    return tmp_path


def wait_for_end(cwd: Path, timeout_s: float = 420) -> list[dict]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        rows = json.loads(orchestrate(cwd, "status", "--json").stdout)["runs"]
        if all(r["ended"] for r in rows):
            return rows
        time.sleep(3)
    raise AssertionError("runs did not end in time:\n" + orchestrate(cwd, "status").stdout)


def test_submit_status_collect_end_to_end(study: Path) -> None:
    dry = orchestrate(study, "submit", "matrix.yaml", "--dry-run")
    assert "#SBATCH --array=0-5%4" in dry.stdout and "#SBATCH --gres=gpu:t4:1" in dry.stdout
    assert not (study / "scratch").exists(), "--dry-run must write nothing"

    first = orchestrate(study, "submit", "matrix.yaml")
    assert "6 new, 0 skipped as done" in first.stdout, first.stdout
    manifest = json.loads(next((study / "scratch").glob("*/manifest.json")).read_text())
    submissions = list(manifest["submissions"].values())
    assert len(submissions) == 1 and submissions[0]["state"] == "submitted"  # one sbatch for one resource group
    assert len(submissions[0]["job_ids"]) == 6 and all("_" in j for j in submissions[0]["job_ids"])

    again = orchestrate(study, "submit", "matrix.yaml")  # while running: nothing new
    assert "0 new" in again.stdout, again.stdout

    rows = {r["run_name"]: r for r in wait_for_end(study)}
    assert {rows[n]["state"] for n in ("A1-seed1", "A1-seed2", "A2-seed1", "A2-seed2")} == {"completed"}
    bad = rows["BAD-seed1"]
    assert bad["state"] == "failed" and "nonexistent" in bad["reason"] and bad["log_tail"], bad
    assert rows["A1-seed1"]["node"] and rows["A1-seed1"]["total_steps"] == 6

    table = orchestrate(study, "status").stdout
    assert "4 completed, 2 failed (6 runs)" in table, table

    done = orchestrate(study, "submit", "matrix.yaml")
    assert "0 new, 4 skipped as done, 0 skipped as running or pending, 2 failed before" in done.stdout, done.stdout

    orchestrate(study, "collect")
    experiment = manifest["experiment"]
    runs_csv = study / "results" / experiment / "runs.csv"
    import pandas as pd

    frame = pd.read_csv(runs_csv)
    finished = frame[frame["status"] == "completed"]
    assert len(finished) == 4
    for _, row in finished.iterrows():
        result = json.loads((study / "scratch" / experiment / "runs" / row["run_id"] / "result.json").read_text())
        assert row["metrics.f1"] == pytest.approx(result["metrics"]["f1"])
        assert row["train_result.samples_per_s"] == pytest.approx(result["train"]["samples_per_s"])


def test_cancel_and_pending_states(study: Path) -> None:
    text = (study / "matrix.yaml").read_text().replace("max_steps: 6", "max_steps: 400").replace("save_steps: 3", "save_steps: 1000")
    assert "max_steps: 400" in text
    text = text.replace("runs:", "resources: {array_parallelism: 1}\nruns:")
    (study / "matrix.yaml").write_text(text)
    orchestrate(study, "submit", "matrix.yaml", "--only", "A1")
    deadline = time.time() + 90
    states: set[str] = set()
    while time.time() < deadline and "running" not in states:
        rows = json.loads(orchestrate(study, "status", "--json").stdout)["runs"]
        states = {r["state"] for r in rows if r["run_name"].startswith("A1")}
        time.sleep(2)
    assert states == {"running", "pending"}, states  # %1 throttle: one runs, one waits
    out = orchestrate(study, "cancel").stdout
    assert "cancelled 2 run(s)" in out, out
    deadline = time.time() + 60
    while time.time() < deadline:
        rows = json.loads(orchestrate(study, "status", "--json").stdout)["runs"]
        a1 = [r for r in rows if r["run_name"].startswith("A1")]
        if all(r["state"] == "cancelled" for r in a1):
            break
        time.sleep(2)
    assert all(r["state"] == "cancelled" for r in a1), a1
    assert all(r["state"] == "not submitted" for r in rows if not r["run_name"].startswith("A1"))


def test_submit_from_inside_a_slurm_job_gets_its_own_allocation(study: Path) -> None:
    """`orchestrate submit` run by a batch job (a driver job, a pipeline step): the outer job's SLURM_*
    variables must not leak into the new jobs. The outer job asks --mem-per-cpu; the runs ask --mem. If
    SLURM_MEM_PER_CPU leaked, the runs' srun would refuse both at once and the runs would fail."""
    import os
    import subprocess
    import sys

    text = (study / "matrix.yaml").read_text().replace("seed: [1, 2]", "seed: [1]")
    (study / "matrix.yaml").write_text(text)
    out = study / "outer.out"
    wrap = (f"{sys.executable} -m orchestrator.cli submit matrix.yaml --only A1 && "
            "echo OUTER_JOB_ID=$SLURM_JOB_ID")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    outer = subprocess.run(["sbatch", "--parsable", "--partition=cpu", "--mem-per-cpu=300", "--cpus-per-task=1",
                            "--time=5", f"--chdir={study}", f"--output={out}", "--wrap", wrap],
                           env=env, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    deadline = time.time() + 180
    while time.time() < deadline and "OUTER_JOB_ID=" not in (out.read_text() if out.exists() else ""):
        time.sleep(2)
    log = out.read_text() if out.exists() else ""
    assert f"OUTER_JOB_ID={outer}" in log and "1 new" in log, log
    rows = {r["run_name"]: r for r in wait_for_end(study)}
    run = rows["A1-seed1"]
    assert run["state"] == "completed", (run, orchestrate(study, "status").stdout)
    assert not run["job_id"].startswith(outer + "_") and run["job_id"] != outer
    run_dir = next((study / "scratch").glob(f"*/runs/{run['run_id']}"))
    seen = json.loads((run_dir / "env.json").read_text())["env"]
    # Only the variables that name a job: a PID (SLURM_TASK_PID) or a port may equal the outer job's id by chance.
    leaked = {k: v for k, v in seen.items()
              if k == "SLURM_MEM_PER_CPU" or (re.search(r"JOB_?ID$", k) and v == outer)}
    assert not leaked, f"the run saw the outer job's variables: {leaked}"
