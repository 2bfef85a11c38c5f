"""The local queue: runs one submission's jobs through submitit's LocalExecutor, at most
``parallelism`` at a time, in a detached process so ``orchestrate submit`` returns at once.

    python -m orchestrator.backends.local.queue EXPERIMENT_DIR TOKEN

Each started job's process id is recorded in the manifest (under the experiment lock), so
``status`` and ``cancel`` work the same as with SLURM. Each job gets the GPUs it asks for
(``orchestrator/backends/local/gpus.py`` gives the rule), recorded in its attempt as ``gpus``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.backends.local import gpus as localgpu
from orchestrator.experiment.manifest import CANCELLED, ENDED, FINISHED, QUEUED, STARTED, Manifest
from orchestrator.experiment.store import Experiment

POLL_S = 1.0


def start(experiment_dir: Path, token: str) -> int:
    """Start the queue runner detached from this terminal; return its pid."""
    log_dir = experiment_dir / "submitit" / token
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "localq.log", "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.backends.local.queue", str(experiment_dir), token],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return process.pid


class _Runner:
    def __init__(self, experiment_dir: Path, token: str) -> None:
        self.experiment = Experiment(experiment_dir)
        self.token = token
        self.stopping = False
        self.running: dict[str, Any] = {}  # run_id -> submitit LocalJob
        self.found = ""  # how the machine's GPUs were found (localgpu.discover)
        self.pool = localgpu.GpuPool([])

    def _update(self, run_id: str | None, **fields: Any) -> Manifest:
        """Set ``fields`` on the run's latest attempt (if it is still this submission's), or on the
        submission when ``run_id`` is None, under the experiment lock."""
        with self.experiment.locked():
            manifest = self.experiment.read_manifest()
            record: Any = manifest.submissions[self.token]
            if run_id is not None:
                record = manifest.runs[run_id].attempts[-1]
                if record.submission != self.token:
                    return manifest
            for name, value in fields.items():
                setattr(record, name, value)
            self.experiment.write_manifest(manifest)
            return manifest

    def _queued(self, manifest: Manifest) -> list[str]:
        out = []
        for run_id in manifest.submissions[self.token].run_ids:
            attempt = manifest.runs[run_id].attempts[-1]
            if attempt.submission == self.token and attempt.state == QUEUED:
                out.append(run_id)
        return out

    def _launch(self, run_id: str, setup: list[str], timeout_min: int, devices: list[str]) -> None:
        import submitit

        from jobs.entrypoint import Worker

        executor = submitit.LocalExecutor(folder=self.experiment.submitit_dir / self.token / "%j")
        # submitit would hide every GPU (gpus_per_node=0): the job's devices are set in its shell instead,
        # which also carries non-integer entries (GPU-/MIG- UUIDs) that submitit's visible_gpus refuses
        gpu_lines = localgpu.job_environment_lines(devices, self.found)
        executor.update_parameters(timeout_min=timeout_min, setup=[*setup, *gpu_lines])
        job = executor.submit(Worker(), str(self.experiment.run_dir(run_id).path))
        self.running[run_id] = job
        self._update(run_id, state=STARTED, job_id=f"local-{job.job_id}", pid=int(job.job_id),
                     started_at=time.time(), log=str(job.paths.stderr), gpus=",".join(devices))

    def _next(self, queue: list[str], gpus: dict[str, int]) -> tuple[str, list[str]] | None:
        """The first queued run whose GPUs are free (a waiting GPU run does not hold back a CPU run)."""
        for run_id in queue:
            devices = self.pool.take(run_id, gpus[run_id])
            if devices is not None:
                queue.remove(run_id)
                return run_id, devices
        return None

    def run(self) -> None:
        for name in localgpu.scheduler_job_variables(dict(os.environ)):
            del os.environ[name]  # started inside a SLURM allocation: its ids are not the runs' own
        devices, self.found = localgpu.discover()
        manifest = self._update(None, runner_pid=os.getpid(), runner_state="running", gpus_found=devices,
                                gpus_found_by=self.found)
        entry = manifest.submissions[self.token]
        parallelism = entry.parallelism or 1
        self.pool = localgpu.GpuPool(devices, runs_per_gpu=entry.runs_per_gpu or 1)
        setup = list(entry.setup or [])
        queue = self._queued(manifest)
        specs = {r: _spec_resources(self.experiment, r) for r in queue}
        sources = {r: _source_of(self.experiment, r) for r in queue}
        while (queue or self.running) and not self.stopping:
            self._cancel_orphans(queue, sources)
            while queue and len(self.running) < parallelism and not self.stopping:
                ready = [r for r in queue if source_state(self.experiment, sources[r]) == SOURCE_DONE]
                chosen = self._next(ready, {r: specs[r][1] for r in ready})
                if chosen is None:
                    break  # every queued run waits for a GPU or for its source (init_from)
                run_id, run_devices = chosen
                queue.remove(run_id)
                if run_id in self._queued(self.experiment.read_manifest()):  # not cancelled meanwhile
                    self._launch(run_id, setup, specs[run_id][0], run_devices)
                else:
                    self.pool.release(run_id)
            for run_id, job in list(self.running.items()):
                if job.done():
                    del self.running[run_id]
                    self.pool.release(run_id)
                    self._update(run_id, state=ENDED, ended_at=time.time())
            time.sleep(POLL_S)
        if self.stopping:
            self._cancel(queue)
        self._update(None, runner_state=CANCELLED if self.stopping else FINISHED, state=FINISHED)

    def _cancel_orphans(self, queue: list[str], sources: dict[str, str | None]) -> None:
        """Cancel the queued runs whose source (init_from) ended without a result: they can never start."""
        for run_id in list(queue):
            if source_state(self.experiment, sources[run_id]) == SOURCE_FAILED:
                queue.remove(run_id)
                print(f"cancelled {run_id}: its source run {sources[run_id]} ended without a result", flush=True)
                self._update(run_id, state=CANCELLED, ended_at=time.time())

    def _cancel(self, queue: list[str]) -> None:
        for run_id, job in self.running.items():
            job.cancel(check=False)
            self._update(run_id, state=CANCELLED, ended_at=time.time())
        for run_id in queue:
            self._update(run_id, state=CANCELLED)


def _spec_resources(experiment: Experiment, run_id: str) -> tuple[int, int]:
    """(time limit in minutes, GPUs asked for) of a run."""
    try:
        resources = experiment.run_dir(run_id).read_spec().resources
    except Exception:  # noqa: BLE001 - a broken spec is reported by the worker itself
        return 60, 0
    return resources.time_min, resources.gpus


SOURCE_DONE, SOURCE_WAIT, SOURCE_FAILED = "done", "wait", "failed"


def _source_of(experiment: Experiment, run_id: str) -> str | None:
    """The run id of the run's init_from source, or None."""
    try:
        source = experiment.run_dir(run_id).read_spec().source
    except Exception:  # noqa: BLE001 - a broken spec is reported by the worker itself
        return None
    return source.run_id if source is not None else None


def source_state(experiment: Experiment, source_id: str | None) -> str:
    """done (no source, or its result.json is there), wait (its latest attempt is queued or running) or
    failed (it ended, was cancelled or never ran without a result): the same rule as SLURM's afterok."""
    if source_id is None or experiment.run_dir(source_id).result_path.exists():
        return SOURCE_DONE
    attempt = experiment.read_manifest().latest_attempt(source_id)
    if attempt is not None and attempt.state in (QUEUED, STARTED):
        return SOURCE_WAIT  # a failure.json there is an earlier attempt's: the worker retires it when it starts
    return SOURCE_FAILED


def pid_alive(pid: int | None) -> bool:
    """True if ``pid`` is a live, non-zombie process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    runner = _Runner(Path(args[0]), args[1])

    def _stop(signum: int, frame: Any) -> None:
        runner.stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
