"""A small study run with the local executor from inside a SLURM allocation (an interactive ``srun`` on a
GPU node is a first-class way to run one): the runs are the local queue's, not the allocation's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs.contract import read_jsonl
from tests.integration.tiny import REPO, TINY_DEFAULTS

pytestmark = pytest.mark.slurm

MATRIX = """
experiment: inalloc
root: {root}
cluster: local
runs:
  A1: {{attention: eager, max_steps: 4, save_steps: 2}}
"""


def test_a_local_run_started_inside_srun_records_only_its_own_ids(tmp_path: Path, slurm_cluster: None) -> None:
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(MATRIX).format(root=tmp_path / "scratch") + TINY_DEFAULTS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(["srun", "--partition=cpu", "--cpus-per-task=1", "--mem=3000", "--time=10",
                           "--job-name=alloc", sys.executable, "-m", "orchestrator.cli", "submit", "matrix.yaml",
                           "--wait"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    experiment = tmp_path / "scratch" / "inalloc"
    manifest = json.loads((experiment / "manifest.json").read_text())
    (run_id, run), = manifest["runs"].items()
    own = run["attempts"][-1]["job_id"]
    assert own.startswith("local-"), run
    run_dir = experiment / "runs" / run_id
    result = json.loads((run_dir / "result.json").read_text())
    heartbeat = json.loads((run_dir / "heartbeat.json").read_text())
    assert result["job_id"] == heartbeat["job_id"] == own, (result["job_id"], heartbeat)
    assert {line["job_id"] for line in read_jsonl(run_dir / "attempts.jsonl")} == {own}
    env_json = json.loads((run_dir / "env.json").read_text())
    assert env_json["slurm"] == {} and not [k for k in env_json["env"] if k.startswith("SLURM_")], env_json["env"]
