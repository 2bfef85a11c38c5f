"""SLURM's view and ours never disagree into a duplicate: accounting that lags or is down, a cluster
found only through SLURM_CONF. Every fault is real: the accounting database really refuses writes,
slurmdbd is really stopped, /etc/slurm is really hidden (in a private mount namespace)."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

from tests.integration.tiny import REPO, TINY_DEFAULTS, orchestrate

PROFILE = """
executor: slurm
partitions:
  t4: {gpu_type: t4, gpu_name: fake T4, cuda: false, bf16: false}
resources: {partition: t4, gpus: 0, cpus_per_task: 1, mem_gb: 1.0, time_min: 10, array_parallelism: 4}
env: {TOKENIZERS_PARALLELISM: "false", HF_HUB_OFFLINE: "1", HF_DATASETS_OFFLINE: "1", OMP_NUM_THREADS: "1"}
"""
HOLD = "#SBATCH --hold\n"  # the job stays pending (JobHeldUser) until released or cancelled


def make_study(tmp_path: Path, runs: str, name: str, extra_template: str = "") -> Path:
    profile = tmp_path / "slurm_templates" / "view"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    template = (REPO / "slurm_templates/example-t4/preamble.sh.j2").read_text()
    (profile / "preamble.sh.j2").write_text(template.replace("#SBATCH --time=", extra_template + "#SBATCH --time=", 1))
    text = f"experiment: {name}{int(time.time() * 1000) % 10**8}\nroot: {tmp_path / 'scratch'}\ncluster: view\n"
    (tmp_path / "matrix.yaml").write_text(text + TINY_DEFAULTS + "  seed: 7\nruns:\n"
                                          + textwrap.indent(textwrap.dedent(runs), "  "))
    return tmp_path


def manifest_path(study: Path) -> Path:
    return next((study / "scratch").glob("*/manifest.json"))


def queued_jobs(experiment: str) -> list[str]:
    """This user's jobs in the controller whose name is one of the experiment's submissions."""
    out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%j"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split("|")[0] for line in out.splitlines() if line.split("|")[1].startswith(f"orc.{experiment}.")]


def cancel_all(study: Path) -> None:
    """Cancel the study's jobs, by name too: a test that failed may have left a job `cancel` misses."""
    orchestrate(study, "cancel", check=False)
    for path in (study / "scratch").glob("*/manifest.json"):
        leftover = queued_jobs(json.loads(path.read_text())["experiment"])
        if leftover:
            subprocess.run(["scancel", *leftover], check=False)


def age_submission(study: Path, seconds: float) -> None:
    """Make the recorded submission look ``seconds`` old: past the grace given to a fresh sbatch."""
    path = manifest_path(study)
    manifest = json.loads(path.read_text())
    for run in manifest["runs"].values():
        for attempt in run["attempts"]:
            attempt["submitted_at"] -= seconds
    path.write_text(json.dumps(manifest))


@contextmanager
def accounting_writes_blocked() -> Iterator[None]:
    """A real accounting lag: MariaDB's global read lock makes slurmdbd's inserts wait, while sacct's
    reads still answer (without the new job). Released when the mysql session ends."""
    session = subprocess.Popen(["mysql", "-u", "root", "-N", "--unbuffered"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert session.stdin is not None and session.stdout is not None
    try:
        session.stdin.write("FLUSH TABLES WITH READ LOCK;\nSELECT 'locked';\n")
        session.stdin.flush()
        assert session.stdout.readline().strip() == "locked"
        yield
    finally:
        session.stdin.close()
        session.wait(timeout=30)


def sacct_rows(job_id: str) -> str:
    return subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id.split("_")[0], "-o", "JobID,State"],
                          capture_output=True, text=True, check=True).stdout


def test_lagging_accounting_is_neither_lost_nor_resubmitted(tmp_path: Path, slurm_cluster: None) -> None:
    study = make_study(tmp_path, "A: {max_steps: 4}\n", "lag", HOLD)
    experiment = ""
    with accounting_writes_blocked():
        try:
            orchestrate(study, "submit", "matrix.yaml")
            experiment = json.loads(manifest_path(study).read_text())["experiment"]
            age_submission(study, 600)
            job_id = json.loads(orchestrate(study, "status", "--json").stdout)["runs"][0]["job_id"]
            assert job_id and sacct_rows(job_id) == "", "the fault did not happen: sacct already has the job"
            run = json.loads(orchestrate(study, "status", "--json").stdout)["runs"][0]
            assert run["state"] == "pending" and run["reason"] == "JobHeldUser", run
            retry = orchestrate(study, "submit", "matrix.yaml", "--retry-failed")
            assert "0 new" in retry.stdout and "1 skipped as running or pending" in retry.stdout, retry.stdout
            assert queued_jobs(experiment) == [job_id]
            assert sacct_rows(job_id) == "", "accounting caught up during the test: it proved nothing"
        finally:
            cancel_all(study)
    assert len(json.loads(manifest_path(study).read_text())["submissions"]) == 1


def test_accounting_down_is_neither_lost_nor_resubmitted(tmp_path: Path, slurm_cluster: None) -> None:
    study = make_study(tmp_path, "A: {max_steps: 4}\n", "nodbd", HOLD)
    subprocess.run(["pkill", "-x", "slurmdbd"], check=False)
    try:
        time.sleep(1)
        orchestrate(study, "submit", "matrix.yaml")
        experiment = json.loads(manifest_path(study).read_text())["experiment"]
        age_submission(study, 600)
        out = json.loads(orchestrate(study, "status", "--json").stdout)
        run = out["runs"][0]
        assert run["state"] == "pending" and run["reason"] == "JobHeldUser", out
        retry = orchestrate(study, "submit", "matrix.yaml", "--retry-failed")
        assert "0 new" in retry.stdout and "1 skipped as running or pending" in retry.stdout, retry.stdout
        assert queued_jobs(experiment) == [run["job_id"]]
    finally:
        subprocess.run(["bash", str(REPO / "tests/slurm/start-cluster.sh")], check=True, capture_output=True)
        cancel_all(study)


def in_slurm_conf_only_cluster(conf_dir: Path, *command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``command`` where SLURM's configuration is found only through SLURM_CONF: a private mount
    namespace hides /etc/slurm behind an empty tmpfs (other processes still see it), SLURM_CONF names
    a copy. SLURM's daemons and the jobs they run are outside, unchanged."""
    env = {**os.environ, "SLURM_CONF": str(conf_dir / "slurm.conf"), "PYTHONPATH": str(REPO),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                           'mount -t tmpfs tmpfs /etc/slurm && exec "$@"', "sh", *command],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_submit_on_a_cluster_found_through_slurm_conf(tmp_path: Path, slurm_cluster: None) -> None:
    study = make_study(tmp_path, "A: {max_steps: 4}\n", "conf")
    conf_dir = tmp_path / "site-conf"
    conf_dir.mkdir()
    for name in ("slurm.conf", "gres.conf"):
        shutil.copy(f"/etc/slurm/{name}", conf_dir / name)
    plain = in_slurm_conf_only_cluster(conf_dir, "sbatch", "--parsable", "-p", "cpu", "--mem=10M", "-o", "/dev/null",
                                       "--wrap", "true", cwd=study)
    assert plain.returncode == 0, plain.stderr  # the site's own way works
    hidden = in_slurm_conf_only_cluster(conf_dir, "env", "-u", "SLURM_CONF", "sbatch", "--wrap", "true", cwd=study)
    assert "Could not establish a configuration source" in hidden.stderr, hidden  # and is the only way

    cli = (sys.executable, "-m", "orchestrator.cli")
    submitted = in_slurm_conf_only_cluster(conf_dir, *cli, "submit", "matrix.yaml", cwd=study)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "1 new" in submitted.stdout and "submitted 1 run(s) as slurm job " in submitted.stdout
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            status = in_slurm_conf_only_cluster(conf_dir, *cli, "status", "--json", cwd=study)
            run = json.loads(status.stdout)["runs"][0]
            if run["ended"]:
                break
            time.sleep(3)
        assert run["state"] == "completed" and json.loads(status.stdout)["note"] is None, status.stdout
    finally:
        cancel_all(study)


def test_a_failed_submission_prints_no_job(tmp_path: Path, slurm_cluster: None) -> None:
    """sbatch refuses (no configuration at all here): exit 1 with SLURM's reason, and no line claiming a job."""
    study = make_study(tmp_path, "A: {max_steps: 4}\n", "refused")
    empty = tmp_path / "no-conf"
    empty.mkdir()
    (empty / "slurm.conf").write_text("")
    failed = in_slurm_conf_only_cluster(empty, sys.executable, "-m", "orchestrator.cli", "submit", "matrix.yaml",
                                        cwd=study)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "as slurm job" not in failed.stdout and "error: submission" in failed.stderr, failed.stdout + failed.stderr
    assert "not submitted: 1 run(s)" in failed.stdout, failed.stdout


def test_cancel_with_slurm_unreachable_fails_saying_so_then_cancels_once_back(tmp_path: Path,
                                                                               slurm_cluster: None) -> None:
    """slurmctld and slurmdbd really stopped: the run's state is unknown, not ended, so cancel tries, fails
    with exit 1 naming the job (it used to print "none were active"), and records nothing; once SLURM is
    back the same command cancels it."""
    study = make_study(tmp_path, "A: {max_steps: 4}\n", "cancelfault", HOLD)
    orchestrate(study, "submit", "matrix.yaml")
    experiment = json.loads(manifest_path(study).read_text())["experiment"]
    [job_id] = queued_jobs(experiment)
    before = manifest_path(study).read_text()
    try:
        subprocess.run(["pkill", "-x", "slurmctld"], check=False)
        subprocess.run(["pkill", "-x", "slurmdbd"], check=False)
        deadline = time.time() + 30
        while subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True, check=False).returncode == 0:
            assert time.time() < deadline, "slurmctld did not stop"
            time.sleep(0.2)
        down = orchestrate(study, "cancel", check=False)
        assert down.returncode == 1, (down.stdout, down.stderr)
        assert f"could not cancel 1 SLURM job(s) ({job_id})" in down.stderr and "nothing was cancelled" in down.stderr
        assert "none were active" not in down.stdout and "Traceback" not in down.stderr
        assert manifest_path(study).read_text() == before
    finally:
        subprocess.run(["bash", str(REPO / "tests/slurm/start-cluster.sh")], check=True, capture_output=True)
    try:
        back = orchestrate(study, "cancel")
        assert "cancelled 1 run(s)" in back.stdout, back.stdout
        assert queued_jobs(experiment) == []
    finally:
        cancel_all(study)
