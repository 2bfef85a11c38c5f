"""Login-node speed against the real local SLURM cluster (tests/slurm/start-cluster.sh).

    python benchmarks/orchestrator.py [--runs 10000] [--collect-runs 10000]

1. submit a matrix of --runs runs in two resource groups through `orchestrate submit`
   (real sbatch, one call an array chunk of at most the cluster's MaxArraySize tasks; the jobs
   are submitted held, so nothing trains, and cancelled at the end); runs beyond the controller's
   MaxJobCount (or a MaxSubmitJobs cap) wait for a slot and a feeder job, which never starts here
   since the jobs are held: `submit_runs_submitted` counts the runs submitted, the rest waited;
2. `orchestrate status` over those runs, twice;
3. `orchestrate collect` over --collect-runs synthetic finished run directories, cold (no index,
   no outputs) and again with nothing changed.

Each command runs in a fresh interpreter (imports count, as they do for a user), which reports
the command's own wall time, its peak resident memory (``ru_maxrss``), its user and system CPU time
and the SLURM commands it ran. A submit creates three inodes a run (the run directory, spec.json,
submitit's pickle): on ext4, for a minute or two after many files were deleted (this script deletes
its work directory at the end), each new inode costs about ten times more kernel time (``perf``:
``find_inode_bit`` -> ``recently_deleted``), so leave two minutes between runs; ``submit_sys_cpu_s``
shows it. Targets (issue 15, 10,000 runs): submit under 10 s with one sbatch an array chunk, status
under 1 s with one accounting call, collect cold under 3 s and unchanged under 0.3 s, every
login-node process under 500 MB resident.
"""

from __future__ import annotations

import argparse
import json
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


# The child: one orchestrate command, then its figures as JSON on the pipe $BENCH_FD (stdout is the command's).
_CHILD = """
import contextlib, io, json, os, resource, sys, time
started = time.perf_counter()
from orchestrator.backends.slurm import commands
from orchestrator.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
figures = {"code": code, "wall_s": wall, "max_rss_mb": usage.ru_maxrss / 1024, "user_cpu_s": usage.ru_utime,
           "sys_cpu_s": usage.ru_stime, "calls": dict(commands.CALLS), "out": out.getvalue()}
with os.fdopen(int(os.environ["BENCH_FD"]), "w") as report:
    json.dump(figures, report)
"""


def timed(args: list[str], cwd: Path | None = None) -> dict:
    """Run ``orchestrate ARGS`` in a fresh interpreter; its figures (wall_s from interpreter start,
    process_s including start-up, max_rss_mb, calls, out)."""
    read, write = os.pipe()
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *args], cwd=cwd, pass_fds=(write,),
                             env={**os.environ, "PYTHONPATH": str(REPO), "BENCH_FD": str(write)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(write)
    with os.fdopen(read) as report:
        text = report.read()
    _, stderr = child.communicate()
    figures = {"process_s": time.perf_counter() - started, **(json.loads(text) if text else {})}
    if child.returncode != 0 or figures.get("code") != 0:
        raise SystemExit(f"orchestrate {' '.join(args)} failed ({child.returncode}, {figures.get('code')}):\n"
                         f"{figures.get('out', '')}{stderr.decode()[-3000:]}")
    return figures


def record(figures: dict[str, object], name: str, run: dict) -> None:
    """Copy one command's figures into ``figures`` under ``name``."""
    figures[f"{name}_s"] = run["wall_s"]
    figures[f"{name}_process_s"] = run["process_s"]
    figures[f"{name}_max_rss_mb"] = run["max_rss_mb"]
    figures[f"{name}_user_cpu_s"] = run["user_cpu_s"]  # the process's own Python work
    figures[f"{name}_sys_cpu_s"] = run["sys_cpu_s"]  # the kernel's work for it (a submit's: mostly creating files)
    for command, count in sorted(run["calls"].items()):
        figures[f"{name}_{command}_calls"] = count


def bench_submit_status(work: Path, runs: int) -> dict[str, object]:
    profile = work / "slurm_templates" / "bench"
    profile.mkdir(parents=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    (profile / "preamble.sh.j2").write_text(PREAMBLE)
    (work / "matrix.yaml").write_text(matrix_text(work / "scratch", runs))
    figures: dict[str, object] = {"max_array_size": slurm.read_config().get("MaxArraySize", "?")}
    submitted = False
    try:
        run = timed(["submit", "matrix.yaml"], cwd=work)
        submitted = True
        record(figures, "submit", run)
        lines = run["out"].strip().splitlines()
        print("\n".join([lines[0]] + [line for line in lines if "waiting for a slot" in line or "warning:" in line]))
        figures["submit_arrays"] = sum("submitted" in line and "run(s) as" in line for line in lines)
        figures["submit_runs_submitted"] = sum(int(line.split()[1]) for line in lines
                                               if line.startswith("  submitted ") and "run(s) as" in line)
        time.sleep(5)  # sacct lists new held jobs a few seconds after sbatch: measure the full answer
        run = timed(["status"], cwd=work)
        record(figures, "status", run)
        print(run["out"].strip().splitlines()[-1])
        record(figures, "status_again", timed(["status"], cwd=work))
    finally:
        if submitted or (work / "scratch").exists():
            print(timed(["cancel"], cwd=work)["out"].strip())
    return figures


def bench_collect(work: Path, runs: int, study: Path | None) -> dict[str, object]:
    """``orchestrate collect`` cold and unchanged; ``study``: an experiment directory built
    earlier (by this script with --keep-study), else one is built here (not timed)."""
    if study is None or not (study / "runs").is_dir():
        sys.path.insert(0, str(REPO / "tests" / "unit"))
        from collect_fixtures import build_many  # the collect tests' run-dir builder

        study = build_many(study.parent if study else work / "collect", runs, experiment=study.name if study else "bench")
    out_dir = work / "results"
    shutil.rmtree(out_dir, ignore_errors=True)
    for name in (".collect-index",):  # cold: no index either
        (study / name).unlink(missing_ok=True)
    figures: dict[str, object] = {"collect_runs": sum(1 for _ in (study / "runs").iterdir())}
    args = ["collect", str(study), "--out", str(out_dir)]
    record(figures, "collect_cold", timed(args))
    record(figures, "collect_unchanged", timed(args))
    record(figures, "collect_unchanged_again", timed(args))
    return figures


def cpu_pressure() -> str:
    """The kernel's CPU pressure (share of time some task waited for a CPU): how busy the box was."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0].split("avg10=")[1].split()[0] + "%"
    except (OSError, IndexError):
        return "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--collect-runs", type=int, default=10000)
    parser.add_argument("--study", type=Path, help="experiment directory for collect, kept (built once if absent)")
    parser.add_argument("--skip-slurm", action="store_true")
    parser.add_argument("--skip-collect", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="orchestrate-bench-"))
    figures: dict[str, object] = {"cpu_pressure_start": cpu_pressure()}
    try:
        if not args.skip_slurm:
            subprocess.run(["bash", str(REPO / "tests/slurm/start-cluster.sh")], check=True, capture_output=True)
            figures.update(bench_submit_status(work, args.runs))
        if not args.skip_collect:
            figures.update(bench_collect(work, args.collect_runs, args.study))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["cpu_pressure_end"] = cpu_pressure()
    print(f"\n{'figure':<36}{'value':>12}")
    for key, value in figures.items():
        print(f"{key:<36}{value:>12.3f}" if isinstance(value, float) else f"{key:<36}{value!s:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
