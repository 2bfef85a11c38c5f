"""The embedded default: no SLURM, the same commands run the real worker through submitit's
local executor (a detached queue runner), with a tiny random BERT on generated data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.train

from tests.integration import tiny

REPO = tiny.REPO
SECRETS = {"HF_TOKEN": "hf_sEcReT0123456789", "WANDB_API_KEY": "wandb-KEY-987654", "DB_PASSWORD": "pw-55aa77",
           "MY_SECRET": "s3cr3t-value-x"}

MATRIX = """
experiment: localtest
root: {root}
cluster: local
baseline: A1
runs:
  A1: {{attention: eager, max_steps: 6, save_steps: 3}}
  A4: {{extends: A1, attention: sdpa, padding: dynamic, pad_to_multiple_of: 8, bucketing: true}}
"""


def orchestrate(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return tiny.orchestrate(cwd, *args, env=SECRETS, check=False)


def test_local_submit_wait_status_collect(tmp_path: Path) -> None:
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(MATRIX).format(root=tmp_path / "scratch") + tiny.TINY_DEFAULTS)
    started = time.time()
    result = orchestrate(tmp_path, "submit", "matrix.yaml", "--executor", "local", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 new" in result.stdout and "as local job" in result.stdout
    assert time.time() - started < 600

    rows = json.loads(orchestrate(tmp_path, "status", "--json").stdout)["runs"]
    assert [r["state"] for r in rows] == ["completed", "completed"], rows
    run_dir = tmp_path / "scratch" / "localtest" / "runs" / rows[0]["run_id"]
    for name in ("spec.json", "heartbeat.json", "metrics.jsonl", "env.json", "result.json"):
        assert (run_dir / name).is_file(), name
    result_json = json.loads((run_dir / "result.json").read_text())
    assert result_json["train"]["steps"] == 6 and result_json["job_id"].startswith("local-")

    again = orchestrate(tmp_path, "submit", "matrix.yaml", "--executor", "local")
    assert "0 new, 2 skipped as done" in again.stdout, again.stdout

    collected = orchestrate(tmp_path, "collect")
    assert collected.returncode == 0, collected.stderr
    assert (tmp_path / "results" / "localtest" / "runs.csv").is_file()

    rerun = subprocess.run([sys.executable, "-m", "jobs.entrypoint", str(run_dir)], cwd=REPO,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert rerun.returncode == 0, rerun.stderr  # a done run is recognised as done, by hand too

    # no secret from the environment lands in any file the tool or the worker wrote
    for path in list((tmp_path / "scratch").rglob("*")) + list((tmp_path / "results").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            for value in SECRETS.values():
                assert value.encode() not in data, f"{value} leaked into {path}"
    env_json = json.loads((run_dir / "env.json").read_text())
    assert "HF_TOKEN" not in env_json["env"] and env_json["packages"]["transformers"]
