"""The worker under real signals, as SLURM delivers them: to every process of the job step.

SLURM sends a preemption's SIGTERM, scancel's and ``scontrol requeue``'s SIGTERM and the ``--signal``
USR2 warning to all the job step's processes, the data-loading workers included. These tests start
the real worker in a process group of its own with the default data-loader settings (2 workers) and
signal the whole group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobs.contract import RunDir, TrainConfig, read_jsonl
from jobs.resume import latest_checkpoint

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]


def _start(run_dir: RunDir, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jobs.entrypoint", str(run_dir.path)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for_step(worker: subprocess.Popen, run_dir: RunDir, step: int) -> None:
    deadline = time.time() + 240
    while ((run_dir.read_optional(run_dir.heartbeat_path) or {}).get("step") or 0) < step:
        assert time.time() < deadline, f"the worker did not reach step {step}"
        assert worker.poll() is None, worker.stderr.read().decode()[-3000:] if worker.stderr else ""
        time.sleep(0.2)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


@pytest.mark.parametrize(("signum", "reason"), [(signal.SIGTERM, "cancelled"), (signal.SIGUSR2, "preempted")])
def test_a_signal_to_the_whole_job_spares_the_data_loader_workers(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any, signum: int, reason: str
) -> None:
    """Default data loading (2 worker processes): the signal reaches them too, and the run still saves
    at the step boundary and stops with the signal's reason, not 'exception' (DataLoader worker killed)."""
    train = tiny(max_steps=100000, save_steps=100000, logging_steps=1000, dataloader_workers=2)
    assert TrainConfig.model_fields["dataloader_workers"].default == 2  # the path users run
    run_dir = run_dir_for("group")
    run_dir.write_spec(spec_for(train, "group"))
    worker = _start(run_dir, _clean_env())
    try:
        _wait_for_step(worker, run_dir, 5)
        os.killpg(worker.pid, signum)
        assert worker.wait(timeout=120) == 1
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    failure = json.loads(run_dir.failure_path.read_text())
    assert failure["reason"] == reason, failure
    saved = latest_checkpoint(run_dir.checkpoint_dir)
    assert saved is not None and int(saved.name.split("-")[1]) >= 5, failure


def test_a_local_run_inside_a_slurm_allocation_keeps_its_own_identity(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any
) -> None:
    """The local queue started from an ``srun --pty`` shell: the allocation's SLURM_* variables are in the
    environment, but the run is submitit's local job. It records its own id only, and on SIGTERM it saves
    and stops at once instead of waiting for a SLURM requeue that will never come."""
    train = tiny(max_steps=100000, save_steps=100000, logging_steps=1000)
    run_dir = run_dir_for("local-in-alloc")
    run_dir.write_spec(spec_for(train, "local-in-alloc"))
    env = _clean_env(SLURM_JOB_ID="23", SLURM_JOBID="23", SLURM_STEP_ID="0", SLURM_JOB_PARTITION="cpu",
                     SLURM_RESTART_COUNT="0", SUBMITIT_EXECUTOR="local", SUBMITIT_LOCAL_JOB_ID="24085")
    worker = _start(run_dir, env)
    try:
        _wait_for_step(worker, run_dir, 3)
        beat = run_dir.read_optional(run_dir.heartbeat_path) or {}
        signalled = time.monotonic()
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=120) == 1
        assert time.monotonic() - signalled < 60, "a local run must not wait for SLURM"
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert beat.get("job_id") == "local-24085", beat
    failure = json.loads(run_dir.failure_path.read_text())
    assert failure["reason"] == "cancelled" and failure["job_id"] == "local-24085", failure
    assert {line.get("job_id") for line in read_jsonl(run_dir.path / "attempts.jsonl")} == {"local-24085"}
    env_json = json.loads(run_dir.env_path.read_text())
    assert env_json["slurm"] == {} and not any(key.startswith("SLURM_") for key in env_json["env"]), env_json


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _blocked(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {signum for signum in range(1, 64) if mask & (1 << (signum - 1))}
    return set()


def test_compile_workers_never_see_the_warnings_and_the_save_happens(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any
) -> None:
    """torch.compile (inductor) starts compile-worker processes; SIGTERM to the whole job must not kill them
    (it would fail a compilation in flight): they run with SIGTERM and USR2 blocked, and the run saves."""
    train = tiny(max_steps=100000, save_steps=100000, logging_steps=1000, compile={"enabled": True},
                 padding="dynamic")
    run_dir = run_dir_for("compiled")
    run_dir.write_spec(spec_for(train, "compiled"))
    worker = _start(run_dir, _clean_env())
    try:
        _wait_for_step(worker, run_dir, 3)
        compile_workers = [pid for pid in _descendants(worker.pid)
                           if b"compile_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert compile_workers, "inductor started no compile-worker process"
        for pid in compile_workers:
            assert {signal.SIGTERM, signal.SIGUSR2} <= _blocked(pid), pid
        assert not {signal.SIGTERM, signal.SIGUSR2} & _blocked(worker.pid)  # the main process still hears them
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=180) == 1
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    failure = json.loads(run_dir.failure_path.read_text())
    assert failure["reason"] == "cancelled", failure
    assert latest_checkpoint(run_dir.checkpoint_dir) is not None


def test_the_data_loader_workers_end_with_the_run(tiny: Callable[..., TrainConfig], spec_for: Any,
                                                  run_dir_for: Any) -> None:
    """A run trained in this process (2 persistent loader workers, bucketed batches, evaluation with its own
    workers) leaves no worker process behind. They ignore SIGTERM, so before end_loader_workers the loaders'
    garbage collection left them idle until the process exited."""
    import gc
    import multiprocessing

    from jobs.trainer import run_training

    before = {child.pid for child in multiprocessing.active_children()}
    train = tiny(padding="dynamic", bucketing=True, dataloader_workers=2)
    run_training(spec_for(train, "loaders"), run_dir_for("loaders"))
    gc.collect()
    left = [child for child in multiprocessing.active_children() if child.pid not in before]
    assert left == [], f"worker processes left alive after the run: {left}"


def test_ending_the_loader_workers_survives_a_dead_weak_proxy_in_the_heap() -> None:
    """A dead ``weakref.proxy`` anywhere in the process (compiled runs on a GPU leave some) must not make
    end_loader_workers raise: it runs when a run ends, and a ReferenceError there failed a finished run
    (seen on an H200: 'weakly-referenced object no longer exists'). The live loader beside it still ends."""
    import multiprocessing
    import weakref

    from torch.utils.data import DataLoader

    from jobs.preemption import ChildSignals, end_loader_workers

    class Referent:
        pass

    referent = Referent()
    dead = [weakref.proxy(referent)]
    del referent
    before = {child.pid for child in multiprocessing.active_children()}
    loader = DataLoader(list(range(8)), batch_size=2, num_workers=1, persistent_workers=True,
                        worker_init_fn=ChildSignals())
    iterator = iter(loader)
    next(iterator)
    assert end_loader_workers() == 1, dead
    left = [child for child in multiprocessing.active_children() if child.pid not in before]
    assert left == [], f"worker processes left alive: {left}"


_EXITS_WITH_WORKERS_ALIVE = """
from torch.utils.data import DataLoader
from jobs.preemption import ChildSignals
loader = DataLoader(list(range(64)), batch_size=2, num_workers=2, persistent_workers=True,
                    worker_init_fn=ChildSignals())
iterator = iter(loader)
next(iterator)
print("workers started", flush=True)
"""


def test_a_process_exits_while_its_shielded_loader_workers_are_alive() -> None:
    """A process whose only loader got ChildSignals directly (the bucketed training loader does; no
    shield_loader) and which exits with the workers still alive must exit: the workers ignore the SIGTERM
    multiprocessing's exit handler sends, so without our SIGKILL hook it joined them forever (seen: the
    trainer benchmark on an H200 never exited)."""
    repo = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run([sys.executable, "-c", _EXITS_WITH_WORKERS_ALIVE], check=False, cwd=repo,
                              capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"the process did not exit with its loader workers alive: {hung.stdout!r}") from None
    assert done.returncode == 0 and "workers started" in done.stdout, (done.returncode, done.stdout, done.stderr)
