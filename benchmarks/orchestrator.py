"""Login-node speed against the real local SLURM cluster (tests/slurm/start-cluster.sh).

    python benchmarks/orchestrator.py [--runs 1000] [--collect-runs 10000]

1. submit a matrix of --runs runs in two resource groups through `orchestrate submit`
   (real sbatch; the jobs are submitted held, so nothing trains, and cancelled afterwards);
2. `orchestrate status` over those runs (one sacct call);
3. `orchestrate collect` over --collect-runs synthetic finished run directories.

Prints wall times and the number of sbatch / sacct calls. Targets (issue 2): submit of 1,000
runs under 10 s with at most one sbatch a resource group; status of 1,000 runs under 1 s with
one sacct call; collect of 10,000 run directories under 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.backends.slurm import commands as slurm
from orchestrator.cli import main as orchestrate

PROFILE = """
description: benchmark profile on the local test cluster; jobs are submitted held
executor: slurm
partitions:
  t4: {gpu_type: t4, gpu_name: fake T4, cuda: false}
  cpu: {cuda: false}
resources: {partition: t4, gpus: 0, cpus_per_task: 1, mem_gb: 0.1, time_min: 5, array_parallelism: 4}
"""
PREAMBLE = """#SBATCH --partition={{ resources.partition }}
#SBATCH --cpus-per-task={{ resources.cpus_per_task }}
#SBATCH --mem=100M
#SBATCH --hold
"""


def matrix_text(root: Path, runs: int) -> str:
    per_group = runs // 2
    return textwrap.dedent(f"""
        experiment: bench{int(time.time())}
        root: {root}
        cluster: bench
        max_runs: {runs}
        defaults: {{data: {{synthetic: {{n_train: 8, n_eval: 8}}}}, model_name_or_path: none}}
        runs:
          T: {{grid: {{seed: {list(range(per_group))}}}}}
          C: {{resources: {{partition: cpu}}, grid: {{seed: {list(range(runs - per_group))}}}}}
        """)


def timed(args: list[str]) -> tuple[float, str]:
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = orchestrate(args)
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"orchestrate {' '.join(args)} failed ({code}):\n{out.getvalue()}")
    return elapsed, out.getvalue()


def bench_submit_status(work: Path, runs: int) -> dict[str, float]:
    profile = work / "slurm_templates" / "bench"
    profile.mkdir(parents=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    (profile / "preamble.sh.j2").write_text(PREAMBLE)
    (work / "matrix.yaml").write_text(matrix_text(work / "scratch", runs))
    os.chdir(work)
    slurm.CALLS.clear()
    submit_s, out = timed(["submit", "matrix.yaml"])
    sbatch_calls = slurm.CALLS["sbatch"]
    print(out.strip().splitlines()[0])
    time.sleep(5)  # sacct lists new held jobs a few seconds after sbatch: measure the full answer
    slurm.CALLS.clear()
    status_s, out = timed(["status"])
    sacct_calls = slurm.CALLS["sacct"]
    print(out.strip().splitlines()[-1])
    slurm.CALLS.clear()
    status_again_s, _ = timed(["status"])
    _, out = timed(["cancel"])
    print(out.strip())
    return {"submit_s": submit_s, "sbatch_calls": sbatch_calls, "status_s": status_s,
            "status_warm_s": status_again_s, "sacct_calls": sacct_calls}


def bench_collect(work: Path, runs: int) -> dict[str, float]:
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    from collect_fixtures import build_many  # the collect tests' run-dir builder

    experiment_dir = build_many(work / "collect", runs)
    from orchestrator.collect import collect

    out_dir = work / "results"
    started = time.perf_counter()
    collect(experiment_dir, out_dir)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    collect(experiment_dir, out_dir)
    warm = time.perf_counter() - started
    return {"collect_cold_s": cold, "collect_incremental_s": warm}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--collect-runs", type=int, default=10000)
    parser.add_argument("--skip-slurm", action="store_true")
    parser.add_argument("--skip-collect", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="orchestrate-bench-"))
    figures: dict[str, float] = {}
    try:
        if not args.skip_slurm:
            subprocess.run(["bash", str(REPO / "tests/slurm/start-cluster.sh")], check=True, capture_output=True)
            figures.update(bench_submit_status(work, args.runs))
        os.chdir(REPO)
        if not args.skip_collect:
            figures.update(bench_collect(work, args.collect_runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'figure':<28}{'value':>10}")
    for key, value in figures.items():
        print(f"{key:<28}{value:>10.3f}" if isinstance(value, float) else f"{key:<28}{value:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
