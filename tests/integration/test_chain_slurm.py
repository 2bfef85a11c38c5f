"""init_from on the real local SLURM: one submit runs a chain; the dependent waits for its source
(--dependency=afterok on the source's array task); a killed source leaves its dependent cancelled, with
the reason in status, not pending forever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.backends.slurm import commands as slurm
from tests.integration.test_faults import make_study, result, run_dir, wait_until
from tests.integration.tiny import orchestrate

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_chain_waits_for_source_and_a_killed_source_cancels_its_dependent(tmp_path: Path, slurm_cluster: None) -> None:
    study = make_study(tmp_path, """
        T: {max_steps: 2}
        S: {init_from: {run: T, take: model}, data: {max_train_samples: 0}}
        K: {max_steps: 5000, save_steps: 5000}
        D: {init_from: {run: K, take: model}, data: {max_train_samples: 0}}
    """, "chain")
    orchestrate(study, "submit", "matrix.yaml")
    running = wait_until(study, lambda r: r["K"]["state"] == "running" and r["D"]["state"] == "pending", 120,
                         "K running, D held")
    assert "waiting for source run K" in running["D"]["reason"], running["D"]
    slurm.scancel([running["K"]["job_id"]])
    done = wait_until(study, lambda r: r["S"]["state"] == "completed" and r["D"]["state"] == "cancelled", 600,
                      "S completed, D cancelled")  # a busy shared cluster: minutes
    assert done["D"]["reason"].startswith("source run K cancelled"), done["D"]
    assert not (run_dir(study, done["D"]) / "attempts.jsonl").exists()  # D never started
    evaluated = result(study, done["S"])
    assert evaluated["initial_model"]["source_run_id"] == done["T"]["run_id"] and evaluated["train"]["steps"] == 0
    started = [json.loads(line) for line in (run_dir(study, done["S"]) / "attempts.jsonl").read_text().splitlines()]
    assert started[0]["time"] >= result(study, done["T"])["finished_at"] - 1.0  # S started after T had finished
    plan = orchestrate(study, "submit", "matrix.yaml", "--retry-failed", "--dry-run").stdout
    resubmitted = {name.strip() for line in plan.splitlines() if "run(s):" in line
                   for name in line.split("run(s):", 1)[1].split(",")}
    assert resubmitted == {"K", "D"}, plan  # the chain reruns from the failure: the source and its dependent
