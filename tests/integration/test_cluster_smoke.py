"""Smoke tests of orchestrator.backends.slurm against the real local cluster: arrays, cancel, GPUs, limits."""

from __future__ import annotations

import getpass
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from orchestrator.backends.slurm import commands as slurm
from orchestrator.backends.slurm import parse as slurm_parse

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

T = TypeVar("T")


def sbatch(*args: str) -> str:
    """Submit with sbatch (the tests' stand-in for submitit) and return the job id."""
    result = subprocess.run(
        ["sbatch", "--parsable", "--cpus-per-task=1", "--mem=100M", *args],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return result.stdout.strip().split(";")[0]


def wait_for(poll: Callable[[], T | None], what: str, timeout_s: float = 30.0) -> T:
    """Call `poll` every 0.25 s until it returns something other than None (or falsy)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = poll()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.25)


def since_a_minute_ago() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))


def test_array_tasks_expand_run_concurrently_and_cancel_one() -> None:
    start_time = since_a_minute_ago()
    array_id = sbatch("-p", "cpu", "--array=0-3", "-J", "smoke-array", "-o", "/dev/null", "--wrap", "sleep 120")
    task_ids = [f"{array_id}_{index}" for index in range(4)]
    try:

        def all_running() -> dict[str, slurm_parse.JobState] | None:
            states = slurm.sacct_states([array_id], start_time)
            return states if all(states.get(t) and states[t].state == "running" for t in task_ids) else None

        # Four 1-CPU tasks on a 2-core node run at once: partitions have OverSubscribe=FORCE:4.
        states = wait_for(all_running, "4 running array tasks in sacct")
        assert set(states) == set(task_ids)
        assert all(states[t].node for t in task_ids)
        assert set(slurm.squeue_states([array_id])) == set(task_ids)
        assert slurm.count_user_jobs(getpass.getuser()) >= 4

        slurm.scancel([task_ids[2]])

        def task_2_cancelled() -> dict[str, slurm_parse.JobState] | None:
            states = slurm.sacct_states([task_ids[2]], start_time)
            return states if states[task_ids[2]].state == "cancelled" else None

        states = wait_for(task_2_cancelled, f"{task_ids[2]} cancelled in sacct")
        assert states[task_ids[2]].raw_state.startswith("CANCELLED")
        assert [states[t].state for t in task_ids] == ["running", "running", "cancelled", "running"]
    finally:
        slurm.scancel([array_id])


def test_held_throttled_array_expands_in_sacct_and_squeue() -> None:
    start_time = since_a_minute_ago()
    name = f"smoke-held-{time.time_ns()}"
    array_id = sbatch("-p", "cpu", "--array=0-5%1", "--hold", "-J", name, "-o", "/dev/null", "--wrap", "true")
    try:
        expected = {f"{array_id}_{index}" for index in range(6)}
        states = wait_for(lambda: slurm.sacct_states([f"{array_id}_4"], start_time), "the held array in sacct")
        assert set(states) == expected
        assert {state.state for state in states.values()} == {"pending"}
        assert set(slurm.squeue_states([array_id, "999999"])) == expected  # an unknown id among them is fine
        assert slurm.squeue_states(["999999"]) == {}
        assert slurm.jobs_by_name(name) == {index: f"{array_id}_{index}" for index in range(6)}
    finally:
        slurm.scancel([array_id])


def test_gpu_job_on_t4_partition(tmp_path: Path) -> None:
    start_time = since_a_minute_ago()
    output = tmp_path / "gpu.out"
    job_id = sbatch(
        "-p", "t4", "--gres=gpu:t4:1", "-J", "smoke-gpu", "-o", str(output), "--wrap", "echo gpus=$SLURM_GPUS_ON_NODE"
    )  # fmt: skip

    def finished() -> slurm_parse.JobState | None:
        state = slurm.sacct_states([job_id], start_time).get(job_id)
        return state if state is not None and state.finished else None

    state = wait_for(finished, f"GPU job {job_id} to finish in sacct")
    assert (state.state, state.exit_code) == ("completed", 0)
    assert output.read_text().strip() == "gpus=1"


def test_max_array_size_is_the_default() -> None:
    config = slurm.read_config()
    assert config["ClusterName"] == "orchestrate-test"
    assert slurm_parse.max_array_size(config) == 1001
