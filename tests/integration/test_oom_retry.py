"""OOM-adaptive retry end to end through the local executor: a run fails with a real
``torch.OutOfMemoryError`` in its training step (tests/integration/oom_injection), ``submit
--retry-failed`` resubmits it with half the micro-batch and twice the accumulation, it resumes from
the checkpoint its first attempt saved and ends where an uninterrupted twin at the matrix's
micro-batch ends; result.json, attempts.jsonl, the manifest and collect's table say it was adapted."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest

from tests.integration import tiny

pytestmark = pytest.mark.train

INJECTION = Path(__file__).resolve().parent / "oom_injection"
# micro-batches of more than 2 rows run out of memory, after the first 4 of them (steps 1-4 at batch 4,
# so that checkpoints 2 and 4 exist when step 5 fails)
OOM_ENV = {"PYTHONPATH": f"{tiny.REPO}:{INJECTION}", "ORCHESTRATE_TEST_OOM_ABOVE_BATCH": "2",
           "ORCHESTRATE_TEST_OOM_AFTER": "4"}

# T1 is A1's uninterrupted twin (same training config, so the same config hash), run without the injection.
# No dropout: two micro-batches of 2 and one of 4 then give the same gradient up to float rounding.
MATRIX = """
experiment: oomtest
root: {root}
cluster: local
runs:
  A1:
    batch_size: 4
    max_steps: 6
    save_steps: 2
    model_overrides: {{hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}}
    oom_retry: {{max_adaptations: 2}}
  T1: {{extends: A1}}
"""


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row and "step" in row}


def test_oom_then_retry_failed_adapts_resumes_and_matches_the_twin(tmp_path: Path) -> None:
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(MATRIX).format(root=tmp_path / "scratch") + tiny.TINY_DEFAULTS)
    runs = tmp_path / "scratch" / "oomtest" / "runs"
    tiny.orchestrate(tmp_path, "submit", "matrix.yaml", "--executor", "local", "--only", "T1", "--wait")

    failed = tiny.orchestrate(tmp_path, "submit", "matrix.yaml", "--executor", "local", "--only", "A1", "--wait",
                              env=OOM_ENV, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    (a1_dir,) = [path for path in runs.iterdir() if path.name.startswith("A1-")]
    (t1_dir,) = [path for path in runs.iterdir() if path.name.startswith("T1-")]
    assert a1_dir.name.split("-")[-1] == t1_dir.name.split("-")[-1]  # oom_retry is not part of the config hash
    failure = json.loads((a1_dir / "failure.json").read_text())
    assert failure["reason"] == "cuda_oom" and "injected by the test" in failure["message"], failure

    dry = tiny.orchestrate(tmp_path, "submit", "matrix.yaml", "--executor", "local", "--retry-failed", "--dry-run")
    assert ("retry A1: failed with cuda_oom: adapted batch_size 4 x accumulation 1 -> batch_size 2 x "
            "accumulation 2 (adaptation 1 of 2; same effective batch)") in dry.stdout, dry.stdout
    assert json.loads((a1_dir / "spec.json").read_text())["adaptation"] is None  # a dry run writes nothing

    retried = tiny.orchestrate(tmp_path, "submit", "matrix.yaml", "--executor", "local", "--retry-failed", "--wait",
                               env=OOM_ENV)
    assert "retry A1: failed with cuda_oom: adapted" in retried.stdout and "1 new" in retried.stdout, retried.stdout

    adapted = {"from": {"batch_size": 4, "gradient_accumulation_steps": 1, "gradient_checkpointing": False},
               "to": {"batch_size": 2, "gradient_accumulation_steps": 2, "gradient_checkpointing": False},
               "reason": "cuda_oom", "adaptations": 1}
    result = json.loads((a1_dir / "result.json").read_text())
    twin = json.loads((t1_dir / "result.json").read_text())
    assert result["adapted"] == adapted and twin["adapted"] is None
    starts = [json.loads(line) for line in (a1_dir / "attempts.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "start"]
    assert [start.get("adapted") for start in starts] == [None, adapted]
    manifest = json.loads((tmp_path / "scratch" / "oomtest" / "manifest.json").read_text())
    assert [a.get("adapted") for a in manifest["runs"][a1_dir.name]["attempts"]] == [None, adapted]

    # resumed from the first attempt's last checkpoint, at the same data position: steps 5 and 6 at
    # micro-batch 2 saw the samples the twin saw at micro-batch 4, so losses and metrics agree
    assert result["resume"]["resumed_from_step"] == 4 and result["train"]["steps"] == 6
    assert result["train"]["samples"] == twin["train"]["samples"]
    ours, theirs = _losses(a1_dir), _losses(t1_dir)
    assert sorted(ours) == sorted(theirs) and 6 in ours, (ours, theirs)
    for step in ours:
        assert math.isclose(ours[step], theirs[step], rel_tol=1e-4, abs_tol=1e-5), (step, ours, theirs)
    assert math.isclose(result["metrics"]["f1"], twin["metrics"]["f1"], abs_tol=1e-6)

    tiny.orchestrate(tmp_path, "collect")
    table = (tmp_path / "results" / "oomtest" / "tables" / "configurations.md").read_text()
    assert "adapted after OOM" in table and "A1 (4x1 -> 2x2)" in table, table
