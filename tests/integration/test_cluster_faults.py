"""Faults of the cluster itself, for real against the local SLURM: slurmctld restarted during a submit and
during a status, slurmdbd stopped for a whole (short) study, the node set DOWN under running runs,
`orchestrate submit` SIGKILLed at each step of its own work, and two submits, a cancel and a collect at once.

The kill points are chosen by a test double for `sbatch` put first on the PATH (`sbatch_double`): it counts
its calls, and at the chosen one SIGKILLs its parent (orchestrate, which submitit runs sbatch from) before or
after running the real sbatch. The product knows nothing of it. Every daemon stopped and the node set down
are restored in a ``finally`` (the cluster is shared)."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_disk_full import sealed_steps
from tests.integration.test_faults import heartbeat, result, run_dir, wait_until
from tests.integration.test_faults import make_study as make_running_study
from tests.integration.test_scheduler_view import HOLD, age_submission, cancel_all, make_study, manifest_path
from tests.integration.tiny import REPO, orchestrate

pytestmark = pytest.mark.slurm

START_CLUSTER = REPO / "tests/slurm/start-cluster.sh"
# Two resource groups, so one submission is two job arrays (two sbatch calls): A's first, then B's.
TWO_ARRAYS = """
A: {max_steps: 4, grid: {seed: [1, 2]}}
B: {max_steps: 4, resources: {mem_gb: 1.25}, grid: {seed: [1, 2]}}
"""
SBATCH_DOUBLE = r"""#!/bin/bash
# Test double: the real sbatch, with orchestrate (the parent) SIGKILLed at the call and point chosen.
calls=$(( $(cat "$FAULT_DIR/calls" 2>/dev/null || echo 0) + 1 ))
echo "$calls" >"$FAULT_DIR/calls"
case "$FAULT_POINT:$calls" in
before-sbatch:1 | between-arrays:2) kill -KILL "$PPID"; exit 1 ;;
pause:2) touch "$FAULT_DIR/paused"; while [ ! -e "$FAULT_DIR/go" ]; do sleep 0.05; done ;;
esac
out=$("$REAL_SBATCH" "$@"); rc=$?
if [ "$FAULT_POINT:$calls" = after-sbatch:1 ]; then kill -KILL "$PPID"; sleep 5; fi
echo "$out"
exit $rc
"""


@pytest.fixture()
def sbatch_double(tmp_path: Path) -> dict[str, str]:
    """Environment that puts the sbatch double first on the PATH; set FAULT_POINT in it."""
    folder = tmp_path / "double"
    folder.mkdir()
    (folder / "sbatch").write_text(SBATCH_DOUBLE)
    (folder / "sbatch").chmod(0o755)
    real = shutil.which("sbatch")
    assert real is not None
    return {"PATH": f"{folder}:{os.environ['PATH']}", "FAULT_DIR": str(folder), "REAL_SBATCH": real}


def restart_cluster() -> None:
    """Start whatever is stopped (idempotent, under 2 s when all is well)."""
    subprocess.run(["bash", str(START_CLUSTER)], check=True, capture_output=True, timeout=300)


def stop_daemon(name: str) -> None:
    """SIGTERM the daemon by its pid file and wait until it has exited."""
    pid = int(Path(f"/run/{name}.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 30
    while Path(f"/proc/{pid}").exists():
        assert time.time() < deadline, f"{name} did not stop"
        time.sleep(0.1)


def start_slurmctld() -> None:
    subprocess.run(["/usr/sbin/slurmctld"], check=True, stdin=subprocess.DEVNULL, capture_output=True)
    deadline = time.time() + 30
    while "is UP" not in subprocess.run(["scontrol", "ping"], capture_output=True, text=True,
                                        check=False).stdout:
        assert time.time() < deadline, "slurmctld did not come back"
        time.sleep(0.2)


def slurm_tasks(study: Path) -> dict[str, str]:
    """Every job (array task) the controller holds for the study's submissions: task id -> job name."""
    names = {s["job_name"] for s in json.loads(manifest_path(study).read_text())["submissions"].values()}
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%j"],
                         capture_output=True, text=True, check=True).stdout
    return {i: n for i, n in (line.split("|") for line in out.splitlines()) if n in names}


def assert_each_run_once(study: Path, runs: int) -> None:
    """Every run has exactly one attempt, its job is in SLURM, and SLURM holds no other job of the study."""
    manifest = json.loads(manifest_path(study).read_text())
    assert all(s["state"] in ("submitted", "failed") for s in manifest["submissions"].values()), manifest
    attempts = {run_id: run["attempts"] for run_id, run in manifest["runs"].items()}
    assert len(attempts) == runs and all(len(a) == 1 for a in attempts.values()), attempts
    recorded = sorted(a[0]["job_id"] for a in attempts.values())
    listed = slurm_tasks(study)
    whole = {i for i in listed if "_" not in i}  # squeue lists a cancelled pending array once, collapsed
    assert len(set(recorded)) == len(recorded) and whole <= {j.split("_")[0] for j in recorded}, (recorded, listed)
    assert [j for j in recorded if j.split("_")[0] not in whole] == sorted(i for i in listed if "_" in i), \
        (recorded, listed)


@pytest.mark.parametrize("point", ["before-sbatch", "between-arrays", "after-sbatch"])
def test_submit_killed_at_each_step_then_rerun_submits_each_run_once(
        tmp_path: Path, slurm_cluster: None, sbatch_double: dict[str, str], point: str) -> None:
    study = make_study(tmp_path, TWO_ARRAYS, "kill", HOLD)
    try:
        killed = orchestrate(study, "submit", "matrix.yaml", env={**sbatch_double, "FAULT_POINT": point},
                             check=False)
        assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
        # sorted: the manifest keys submissions by folder name, and two arrays of one second order by its random part
        states = sorted(s["state"] for s in json.loads(manifest_path(study).read_text())["submissions"].values())
        assert states == {"before-sbatch": ["submitting"], "between-arrays": ["submitted", "submitting"],
                          "after-sbatch": ["submitting"]}[point]
        reached = len(slurm_tasks(study))
        assert reached == {"before-sbatch": 0, "between-arrays": 2, "after-sbatch": 2}[point]
        rerun = orchestrate(study, "submit", "matrix.yaml")
        assert f"{4 - reached} new" in rerun.stdout, rerun.stdout
        assert_each_run_once(study, 4)
        again = orchestrate(study, "submit", "matrix.yaml")
        assert "0 new" in again.stdout and "4 skipped as running or pending" in again.stdout, again.stdout
        assert_each_run_once(study, 4)
    finally:
        cancel_all(study)


def test_slurmctld_restarted_during_a_submit(tmp_path: Path, slurm_cluster: None,
                                             sbatch_double: dict[str, str]) -> None:
    """The controller stops just before the second array's sbatch and is back 5 s later: the submit
    completes (sbatch retries its connection) or fails saying so; a rerun submits each run exactly once."""
    study = make_study(tmp_path, TWO_ARRAYS, "ctldsub", HOLD)
    folder = Path(sbatch_double["FAULT_DIR"])
    env = {**os.environ, **sbatch_double, "FAULT_POINT": "pause", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    submit = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "submit", "matrix.yaml"], cwd=study,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (folder / "paused").exists():
            assert time.time() < deadline and submit.poll() is None, "the second sbatch never came"
            time.sleep(0.1)
        stop_daemon("slurmctld")
        (folder / "go").touch()
        time.sleep(5)
        start_slurmctld()
        stdout, stderr = submit.communicate(timeout=120)
        assert submit.returncode == 0 or (submit.returncode == 1 and "error: submission" in stderr), (stdout, stderr)
        rerun = orchestrate(study, "submit", "matrix.yaml")
        assert_each_run_once(study, 4)
        assert "Traceback" not in stderr + rerun.stderr
    finally:
        if submit.poll() is None:
            submit.kill()
        restart_cluster()
        cancel_all(study)


def test_status_during_a_slurmctld_restart_says_the_controller_is_unreachable(tmp_path: Path,
                                                                              slurm_cluster: None) -> None:
    study = make_study(tmp_path, "A: {max_steps: 4}\n", "ctldstatus", HOLD)
    try:
        orchestrate(study, "submit", "matrix.yaml")
        wait_until(study, lambda r: r["A"]["state"] == "pending", 60, "accounting to list the job")
        stop_daemon("slurmctld")
        try:
            out = json.loads(orchestrate(study, "status", "--json").stdout)
            [run] = out["runs"]
            assert run["state"] == "unknown" and "slurmctld" in run["reason"], out
            assert "slurmctld unreachable" in (out["note"] or ""), out
            during = orchestrate(study, "submit", "matrix.yaml")
            assert "0 new" in during.stdout and "1 skipped as running or pending" in during.stdout, during.stdout
        finally:
            start_slurmctld()
        back = json.loads(orchestrate(study, "status", "--json").stdout)
        assert back["runs"][0]["state"] == "pending" and back["note"] is None, back
    finally:
        restart_cluster()
        cancel_all(study)


def test_a_study_with_slurmdbd_stopped_throughout(tmp_path: Path, slurm_cluster: None) -> None:
    """Accounting is down from before the submit to after the collect: the runs run and complete, every
    status says where its states came from, a submit meanwhile resubmits nothing, collect works."""
    study = make_study(tmp_path, "A: {max_steps: 4}\n", "nodbstudy")
    stop_daemon("slurmdbd")
    try:
        orchestrate(study, "submit", "matrix.yaml")
        age_submission(study, 600)  # past the grace a fresh sbatch gets: squeue alone keeps the runs
        during = orchestrate(study, "submit", "matrix.yaml", "--retry-failed")
        assert "0 new" in during.stdout, during.stdout
        deadline = time.time() + 240
        while True:
            out = json.loads(orchestrate(study, "status", "--json").stdout)
            assert "sacct unavailable" in (out["note"] or ""), out  # said on every call, not guessed
            assert not {r["state"] for r in out["runs"]} & {"lost", "unknown", "failed"}, out
            if all(r["ended"] for r in out["runs"]):
                break
            assert time.time() < deadline, out
            time.sleep(2)
        assert {r["state"] for r in out["runs"]} == {"completed"}, out
        after = orchestrate(study, "submit", "matrix.yaml", "--retry-failed")
        assert "0 new" in after.stdout and "1 skipped as done" in after.stdout, after.stdout
        collected = orchestrate(study, "collect")
        assert (study / "results").is_dir(), collected.stdout
        assert subprocess.run(["sacct", "-n", "-X"], capture_output=True, check=False).returncode != 0, \
            "slurmdbd came back during the test (another test restarted it?): it proved nothing"
    finally:
        restart_cluster()
        cancel_all(study)
    manifest = json.loads(manifest_path(study).read_text())
    assert len(manifest["submissions"]) == 1 and all(len(r["attempts"]) == 1 for r in manifest["runs"].values())


def test_two_submits_a_cancel_and_a_collect_at_once(tmp_path: Path, slurm_cluster: None) -> None:
    """From separate processes (two shells), on one experiment whose matrix grew by three runs: no run is
    submitted twice or lost, the manifest stays whole, collect reads a consistent state or says it is busy."""
    study = make_study(tmp_path, "A: {max_steps: 4, grid: {seed: [1, 2, 3]}}\n", "fourway", HOLD)
    try:
        orchestrate(study, "submit", "matrix.yaml")
        matrix = study / "matrix.yaml"
        matrix.write_text(matrix.read_text().replace("[1, 2, 3]", "[1, 2, 3, 4, 5, 6]"))
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        commands = [("submit", "matrix.yaml"), ("submit", "matrix.yaml"), ("cancel",), ("collect",)]
        processes = [subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *c], cwd=study, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
        outputs = [(p.wait(timeout=300), *p.communicate()) for p in processes]
        for command, (code, stdout, stderr) in zip(commands, outputs):
            assert "Traceback" not in stderr, (command, stderr)
            busy = command == ("collect",) and code != 0 and "another collect" in stderr
            assert code == 0 or busy, (command, code, stdout, stderr)
        new = sorted(int(out.split(" new")[0].rsplit(" ", 1)[-1]) for _, out, _ in outputs[:2])
        assert new == [0, 3], outputs  # the three added runs, once
        assert_each_run_once(study, 6)
        rows = json.loads(orchestrate(study, "status", "--json").stdout)["runs"]
        assert {r["state"] for r in rows} <= {"pending", "cancelled"}, rows  # none lost
    finally:
        cancel_all(study)


@pytest.mark.slow  # about 2.5 min: the requeue waits the test cluster's 30 s cred_expire (start-cluster.sh)
def test_node_set_down_under_running_runs_then_they_resume_from_checkpoints(tmp_path: Path,
                                                                             slurm_cluster: None) -> None:
    """`scontrol update state=down` under a run with a sealed checkpoint: SLURM ends the job (NODE_FAIL) and,
    as this cluster allows, requeues it; status shows it pending or node_fail, never lost. After RESUME,
    `--retry-failed` resubmits it if SLURM let it end, or leaves it to SLURM's requeue; either way it resumes
    from its checkpoint."""
    # Long enough that the run is still training when the node goes down, whatever the machine's speed: 40 steps
    # once finished before `scontrol` took effect on a fast CI machine (completed after 9.6 s).
    study = make_running_study(tmp_path, "N: {max_steps: 600, save_steps: 20, logging_steps: 4}\n", "nodedown")
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    reason = f"faults-test-{os.getpid()}"
    try:
        orchestrate(study, "submit", "matrix.yaml")
        current = wait_until(study, lambda r: bool(heartbeat(study, r["N"]).get("step")), 240, "training")
        folder = run_dir(study, current["N"])
        deadline = time.time() + 240
        while not sealed_steps(folder):
            assert time.time() < deadline, "no sealed checkpoint"
            time.sleep(0.2)
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", f"reason={reason}"], check=True)
        try:
            hit = wait_until(study, lambda r: r["N"]["state"] != "running", 120, "SLURM to end the job")
            assert hit["N"]["state"] in ("pending", "node_fail"), hit  # requeued or ended: never lost
        finally:
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False,
                           capture_output=True)  # "Invalid node state" where another test's start resumed it
        retry = orchestrate(study, "submit", "matrix.yaml", "--retry-failed")
        assert ("1 new" if hit["N"]["ended"] else "1 skipped as running or pending") in retry.stdout, retry.stdout
        # A requeued job waits SLURM's requeue delay (BeginTime, cred_expire) first. Do not cut it (`scontrol
        # update StartTime=now`): the old attempt's step outlives the kill by up to KillWait (the worker saves
        # on SIGTERM), slurmd refuses a second copy of a job it still runs ("Job N already running, do not
        # launch second copy"), slurmctld drains the node ("Duplicate jobid") and holds the job: the
        # JobHeldUser this test used to end in (slurmctld.log and slurmd.log of 2026-11-30).
        done = wait_until(study, lambda r: r["N"]["ended"], 420, "the run to end")
        assert done["N"]["state"] == "completed", done
        final = result(study, done["N"])
        assert final["train"]["steps"] == 600 and (final["train"].get("resumed_from_step") or 0) > 0, final["train"]
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False, capture_output=True)
        cancel_all(study)
