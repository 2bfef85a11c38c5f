"""The local queue: runs one submission's jobs through submitit's LocalExecutor, at most
``parallelism`` at a time, in a detached process so ``orchestrate submit`` returns at once.

    python -m orchestrator.localq EXPERIMENT_DIR TOKEN

Each started job's process id is recorded in the manifest (under the experiment lock), so
``status`` and ``cancel`` work the same as with SLURM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

POLL_S = 1.0


def start(experiment_dir: Path, token: str) -> int:
    """Start the queue runner detached from this terminal; return its pid."""
    log_dir = experiment_dir / "submitit" / token
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "localq.log", "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.localq", str(experiment_dir), token],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return process.pid


class _Runner:
    def __init__(self, experiment_dir: Path, token: str) -> None:
        from orchestrator.store import Experiment

        self.experiment = Experiment(experiment_dir)
        self.token = token
        self.stopping = False
        self.running: dict[str, Any] = {}  # run_id -> submitit LocalJob

    def _update(self, run_id: str | None, **fields: Any) -> dict[str, Any]:
        with self.experiment.locked():
            manifest = self.experiment.read_manifest()
            entry = manifest["submissions"][self.token]
            if run_id is not None:
                attempt = manifest["runs"][run_id]["attempts"][-1]
                if attempt.get("submission") == self.token:
                    attempt.update(fields)
            else:
                entry.update(fields)
            self.experiment.write_manifest(manifest)
            return manifest

    def _queued(self, manifest: dict[str, Any]) -> list[str]:
        entry = manifest["submissions"][self.token]
        out = []
        for run_id in entry["run_ids"]:
            attempt = manifest["runs"][run_id]["attempts"][-1]
            if attempt.get("submission") == self.token and attempt.get("state") == "queued":
                out.append(run_id)
        return out

    def _launch(self, run_id: str, setup: list[str], timeout_min: int) -> None:
        import submitit

        from jobs.entrypoint import Worker

        executor = submitit.LocalExecutor(folder=self.experiment.submitit_dir / self.token / "%j")
        executor.update_parameters(timeout_min=timeout_min, setup=setup)
        job = executor.submit(Worker(), str(self.experiment.run_dir(run_id).path))
        self.running[run_id] = job
        self._update(run_id, state="started", job_id=f"local-{job.job_id}", pid=int(job.job_id),
                     started_at=time.time(), log=str(job.paths.stderr))

    def run(self) -> None:
        manifest = self._update(None, runner_pid=os.getpid(), runner_state="running")
        entry = manifest["submissions"][self.token]
        parallelism = int(entry.get("parallelism", 1))
        setup = list(entry.get("setup", []))
        queue = self._queued(manifest)
        timeouts = {r: int(_spec_time(self.experiment, r)) for r in queue}
        while (queue or self.running) and not self.stopping:
            while queue and len(self.running) < parallelism and not self.stopping:
                run_id = queue.pop(0)
                if run_id in self._queued(self.experiment.read_manifest()):  # not cancelled meanwhile
                    self._launch(run_id, setup, timeouts[run_id])
            for run_id, job in list(self.running.items()):
                if job.done():
                    del self.running[run_id]
                    self._update(run_id, state="ended", ended_at=time.time())
            time.sleep(POLL_S)
        if self.stopping:
            self._cancel(queue)
        self._update(None, runner_state="cancelled" if self.stopping else "finished", state="finished")

    def _cancel(self, queue: list[str]) -> None:
        for run_id, job in self.running.items():
            job.cancel(check=False)
            self._update(run_id, state="cancelled", ended_at=time.time())
        for run_id in queue:
            self._update(run_id, state="cancelled")


def _spec_time(experiment: Any, run_id: str) -> int:
    try:
        return experiment.run_dir(run_id).read_spec().resources.time_min
    except Exception:  # noqa: BLE001 - a broken spec is reported by the worker itself
        return 60


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
