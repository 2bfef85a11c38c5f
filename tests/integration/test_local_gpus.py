"""The local queue gives each run the GPUs it asked for, and a GPU run never trains on the CPU.

This machine has no GPU. A fake ``nvidia-smi`` on the PATH makes the queue believe in two: the
runs get distinct devices (one run a GPU, the third waits), and each fails at once with reason
``no_gpu`` (torch finds no CUDA device), before any tokenising; without the fix they trained on
the CPU and reported success.
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from tests.integration import tiny

pytestmark = pytest.mark.train

PROFILE = """
description: a workstation with GPUs, no scheduler
executor: local
local_parallelism: 4
resources: {gpus: 1, cpus_per_task: 1, mem_gb: 2, time_min: 10}
env: {TOKENIZERS_PARALLELISM: "false"}
"""

MATRIX = """
experiment: gpubox
root: {root}
cluster: gpubox
grid:
  seed: [1, 2, 3]
runs:
  A1: {{attention: eager, max_steps: 4}}
"""


def test_a_gpu_run_gets_its_own_gpu_or_fails_with_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / "slurm_templates" / "gpubox"
    profile.mkdir(parents=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    (profile / "preamble.sh.j2").write_text((tiny.REPO / "slurm_templates/local/preamble.sh.j2").read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-0)'\necho 'GPU 1: Fake GPU (UUID: GPU-1)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(MATRIX).format(root=tmp_path / "scratch") + tiny.TINY_DEFAULTS)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # the queue must find the GPUs itself
    result = tiny.orchestrate(tmp_path, "submit", "matrix.yaml", "--wait", check=False,
                              env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode in (0, 1), result.stdout + result.stderr

    experiment = tmp_path / "scratch" / "gpubox"
    manifest = json.loads((experiment / "manifest.json").read_text())
    submission = next(iter(manifest["submissions"].values()))
    assert submission["gpus_found"] == ["0", "1"], submission
    attempts = [run["attempts"][-1] for run in manifest["runs"].values()]
    assert sorted(a["gpus"] for a in attempts).count("0") >= 1 and all(a["gpus"] in ("0", "1") for a in attempts)
    # never two runs on one GPU at once (local_runs_per_gpu: 1): the third started after one ended
    # (the earlier of two runs on one GPU has its end recorded before the later one is launched; the last run's
    # end may not be recorded yet when --wait returns: its failure.json already says it ended)
    for first in attempts:
        for second in attempts:
            if first is not second and first["gpus"] == second["gpus"]:
                earlier, later = sorted((first, second), key=lambda attempt: attempt["started_at"])
                assert earlier["ended_at"] <= later["started_at"]

    for run_dir in (experiment / "runs").iterdir():
        failure = json.loads((run_dir / "failure.json").read_text())
        assert failure["reason"] == "no_gpu", failure
        assert "resources.gpus: 1" in failure["message"] and "CUDA_VISIBLE_DEVICES=" in failure["message"]
        assert "ORCHESTRATE_LOCAL_GPUS='nvidia-smi -L listed 2 GPU(s)'" in failure["message"]
        env_json = json.loads((run_dir / "env.json").read_text())
        assert env_json["env"]["CUDA_VISIBLE_DEVICES"] in ("0", "1")
        assert not (run_dir / "result.json").exists() and not (run_dir / "metrics.jsonl").exists()
    assert not any((experiment / "cache").rglob("*.arrow")), "failed before tokenising: no features cached"

    status = json.loads(tiny.orchestrate(tmp_path, "status", "--json").stdout)["runs"]
    assert {row["state"] for row in status} == {"failed"} and all("no_gpu" in row["reason"] for row in status)
