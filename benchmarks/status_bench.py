"""`orchestrate status` over a large study, with or without the real SLURM cluster.

    python benchmarks/status_bench.py [--runs 10000] [--stand-in] [--keep DIR [--keep-jobs]] [--profile]

Submits a matrix of --runs runs (benchmarks/orchestrator.py's matrix and profile: two resource
groups, held jobs) and times ``orchestrate status`` twice, each in a fresh interpreter (imports
count), reporting wall time, CPU time (its own and its SLURM commands'), peak resident memory
and the SLURM commands it ran.

``--stand-in``: no cluster at all. A directory of stand-in ``sbatch``/``scontrol``/``sacctmgr``/
``squeue``/``sacct``/``sinfo`` scripts goes first on the PATH; ``sacct`` answers for every submitted
array task, ten states in turn (4 COMPLETED with a result.json written, 2 RUNNING with a heartbeat,
2 PENDING, 1 FAILED with a worker.log, 1 TIMEOUT with a failure.json), so status reads files and
the accounting answer as on a busy cluster. ``--profile`` adds a cProfile run of status (top 25 by cumulative time) to the output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import importlib.util

# benchmarks/orchestrator.py's matrix, profile and timing (its file name shadows the package: load it by path)
_spec = importlib.util.spec_from_file_location("bench_orchestrator", REPO / "benchmarks" / "orchestrator.py")
assert _spec is not None and _spec.loader is not None
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
PREAMBLE, PROFILE, cpu_pressure, matrix_text, record, timed = (
    _bench.PREAMBLE, _bench.PROFILE, _bench.cpu_pressure, _bench.matrix_text, _bench.record, _bench.timed)

# The stand-ins: one Python script each, sharing the state file $STANDIN_STATE (the arrays submitted).
_STANDIN = '''#!{python}
import json, os, re, sys, time
state = os.environ["STANDIN_STATE"]
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
jobs = json.load(open(state)) if os.path.exists(state) else {{"next": 1000, "arrays": []}}
if name == "sbatch":
    script = open(args[-1]).read()
    size = re.search(r"--array=0-(\\d+)", script)
    job = jobs["next"]
    jobs["next"] += 1
    jobs["arrays"].append([job, int(size.group(1)) + 1 if size else 1, args[-1]])
    json.dump(jobs, open(state, "w"))
    print(job if "--parsable" in args else f"Submitted batch job {{job}}")
elif name == "scontrol":
    print("MaxArraySize = 1001\\nMaxJobCount = 100000" if args[:2] == ["show", "config"] else
          "Slurmctld(primary) at localhost is UP")
elif name == "sacct":
    states = ["COMPLETED"] * 4 + ["RUNNING"] * 2 + ["PENDING"] * 2 + ["FAILED", "TIMEOUT"]
    for job, size, _ in jobs["arrays"]:
        for task in range(size):
            state = states[task % 10]
            node, elapsed = ("", 0) if state == "PENDING" else ("node1", 60 + task % 300)
            code = "1:0" if state == "FAILED" else "0:0"
            reason = "Priority" if state == "PENDING" else "None"
            print(f"{{job}}_{{task}}|{{job + task}}|{{state}}|{{code}}|{{elapsed}}|{{node}}|2026-11-30T10:00:00|Unknown|{{reason}}")
# squeue, sinfo, sacctmgr: nothing queued, no node reasons, no cap
'''
STANDINS = ("sbatch", "scontrol", "sacct", "squeue", "sinfo", "sacctmgr", "scancel")


def stand_in_path(work: Path) -> str:
    """Write the stand-ins to ``work/bin``; the PATH with it first."""
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in STANDINS:
        script = bin_dir / name
        script.write_text(_STANDIN.format(python=sys.executable))
        script.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def fill_run_dirs(study: Path) -> None:
    """What the stand-in sacct claims, on disk: result.json of COMPLETED tasks, heartbeat.json of RUNNING ones."""
    from jobs.contract import write_json_atomic

    manifest = json.loads((study / "manifest.json").read_text())
    now = time.time()
    for run_id, record in manifest["runs"].items():
        task = int(str(record["attempts"][-1]["job_id"]).rpartition("_")[2] or 0)
        run_dir = study / "runs" / run_id
        if task % 10 < 4:
            write_json_atomic(run_dir / "result.json", {"run_id": run_id, "wall_time_s": 61.0, "node": "node1",
                                                        "train": {"steps": 8, "planned_steps": 8}})
        elif task % 10 < 6:
            write_json_atomic(run_dir / "heartbeat.json", {"state": "training", "step": 3, "total_steps": 8,
                                                           "updated_at": now})
        elif task % 10 == 8:  # FAILED: the worker's log (status shows its tail)
            (run_dir / "worker.log").write_text("".join(f"step {step} loss 0.69\n" for step in range(40)))
        elif task % 10 == 9:  # TIMEOUT, after the worker recorded why
            write_json_atomic(run_dir / "failure.json", {"reason": "cuda_oom", "message": "CUDA out of memory",
                                                         "hint": "smaller batch_size", "failed_at": now})


def build(work: Path, runs: int) -> None:
    profile = work / "slurm_templates" / "bench"
    profile.mkdir(parents=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    (profile / "preamble.sh.j2").write_text(PREAMBLE)
    (work / "matrix.yaml").write_text(matrix_text(work / "scratch", runs))
    print(timed(["submit", "matrix.yaml"], cwd=work)["out"].strip().splitlines()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--stand-in", action="store_true", help="stand-in SLURM commands, no cluster")
    parser.add_argument("--keep", type=Path, help="work directory, kept and reused (built once)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one status")
    parser.add_argument("--keep-jobs", action="store_true",
                        help="with --keep: leave the held jobs queued (another checkout's status can be timed on the "
                        "same study); `orchestrate cancel` in DIR ends them")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="orchestrate-status-bench-"))
    if args.stand_in:
        os.environ["PATH"] = stand_in_path(work)
        os.environ["STANDIN_STATE"] = str(work / "standin.json")
    else:
        subprocess.run(["bash", str(REPO / "tests/slurm/start-cluster.sh")], check=True, capture_output=True)
    figures: dict[str, object] = {"cpu_pressure_start": cpu_pressure(), "load_1min": os.getloadavg()[0]}
    try:
        if not (work / "matrix.yaml").exists():
            build(work, args.runs)
            if args.stand_in:
                fill_run_dirs(next((work / "scratch").iterdir()))
            else:
                time.sleep(5)  # sacct lists new held jobs a few seconds after sbatch
        for name in ("status", "status_again"):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            run = timed(["status"], cwd=work)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            record(figures, name, run)
            # CPU seconds of the command and the SLURM commands it ran: on a loaded machine wall time says
            # more about the neighbours than about status
            figures[f"{name}_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        print(run["out"].strip().splitlines()[-1])
        if args.profile:
            profiled = subprocess.run([sys.executable, "-m", "cProfile", "-s", "cumulative", "-m", "orchestrator.cli",
                                       "status"], cwd=work, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"},
                                      check=True, capture_output=True, text=True)
            lines = profiled.stdout.splitlines()
            start = next(i for i, line in enumerate(lines) if "ncalls" in line)
            print("\n".join(lines[start - 2:start + 25]))
    finally:
        if not args.stand_in and not (args.keep and args.keep_jobs) and (work / "scratch").exists():
            print(timed(["cancel"], cwd=work)["out"].strip())
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    figures["cpu_pressure_end"] = cpu_pressure()
    print("\n" + "\n".join(f"{key:<36}{value:>12.3f}" if isinstance(value, float) else f"{key:<36}{value!s:>12}"
                            for key, value in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
