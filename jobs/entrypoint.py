"""The job's entry point: a run directory in, the run directory's files out.

submitit calls ``Worker()(run_dir)``; a person reruns any run with

    python -m jobs.entrypoint RUN_DIR

The spec is read from ``RUN_DIR/spec.json``; nothing depends on submitit's pickles. Files
written (see jobs/contract/rundir.py): env.json, heartbeat.json, metrics.jsonl (by the trainer),
result.json last on success, failure.json with a classified reason otherwise.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from jobs import envinfo, preemption
from jobs.contract import (
    FAILURE_FILE,
    SPACE_RESERVE_FILE,
    SPEC_FILE,
    RunDir,
    RunSpec,
    append_jsonl,
    applied_train,
    resolve_model_ref,
    write_json_atomic,
)
from jobs.failures import SpaceReserve, classify_exception, free_bytes

log = logging.getLogger("jobs.entrypoint")


class WorkerFailed(RuntimeError):
    """The run failed; failure.json has the details."""


def job_ids() -> dict[str, str | None]:
    """This attempt's own job id and SLURM restart count. A local run (submitit's local executor, also when
    started from inside a SLURM allocation) is ``local-<pid>``: the allocation's ids are not its own."""
    env = os.environ
    if env.get("SUBMITIT_EXECUTOR") == "local":
        local_id = env.get("SUBMITIT_LOCAL_JOB_ID")
        return {"job_id": f"local-{local_id}" if local_id else None, "attempt": "0"}
    array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array_job}_{array_task}" if array_job and array_task else env.get("SLURM_JOB_ID")
    restarts = env.get("SLURM_RESTART_COUNT", "0")
    return {"job_id": job_id, "attempt": restarts}


def _setup_logging(run_dir: RunDir) -> None:
    handler = logging.FileHandler(run_dir.log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and h is not handler for h in root.handlers):
        root.addHandler(logging.StreamHandler(sys.stderr))


def _retire_previous_failure(run_dir: RunDir) -> None:
    """A new attempt starts clean: the last failure is kept beside, not shown as current."""
    if run_dir.failure_path.exists():
        os.replace(run_dir.failure_path, run_dir.previous_failure_path)


def run(run_dir_path: str) -> dict[str, Any]:
    """Run one training run end to end; return result.json's content or raise WorkerFailed."""
    run_dir = RunDir(Path(run_dir_path))
    spec = run_dir.read_spec()
    ids = job_ids()
    _setup_logging(run_dir)
    if run_dir.result_path.exists():
        log.info("result.json exists: run %s is already done", spec.run_id)
        return run_dir.read_optional(run_dir.result_path) or {}
    _retire_previous_failure(run_dir)
    reserve = SpaceReserve(run_dir.path / SPACE_RESERVE_FILE)
    started = time.time()
    preemption.install()
    try:
        reserve.hold()  # first: on a full disk the attempt fails here, with room to say so
        append_jsonl(run_dir.attempts_path, {"event": "start", "time": time.time(), "host": socket.gethostname(),
                                             **_adapted(spec), **ids})
        run_dir.write_heartbeat("starting", step=0, total_steps=None, pid=os.getpid(), hostname=socket.gethostname(),
                                **ids)
        write_json_atomic(run_dir.env_path, envinfo.capture())
        try:
            from jobs.trainer import run_training  # heavy imports only on the compute node

            body = run_training(_resolved(spec), run_dir)
            if preemption.requested():
                raise preemption.Preempted("signal arrived after training")
        except preemption.Preempted:
            if preemption.requeue_requested():
                _requeue(run_dir, ids)
            else:
                _await_scheduler(run_dir, ids)
        result = finish(spec, run_dir, body, ids, started)
    except BaseException as exc:
        if isinstance(exc, SystemExit) and (exc.code in (0, None) or preemption.requested()):
            raise  # submitit's requeue exits this way: the job comes back, it has not failed
        _write_failure(run_dir, exc, ids, reserve)
        raise WorkerFailed(f"run {spec.run_id} failed: {type(exc).__name__}: {exc}") from exc
    reserve.release()
    run_dir.write_heartbeat("done", step=result.get("train", {}).get("steps"),
                            total_steps=result.get("train", {}).get("planned_steps"), **ids)
    return result


def _resolved(spec: RunSpec) -> RunSpec:
    """The spec the trainer runs: ``package:`` model references turned into this node's path, and the
    micro-batching of an OOM adaptation (``spec.adaptation``, same effective batch) in place of the matrix's."""
    train = applied_train(spec)
    path = resolve_model_ref(train.model_name_or_path)
    if path != train.model_name_or_path:
        train = train.model_copy(update={"model_name_or_path": path})
    return spec if train is spec.train else spec.model_copy(update={"train": train})


def _adapted(spec: RunSpec) -> dict[str, Any]:
    """``{"adapted": {from, to, reason, adaptations}}`` for a run adapted after a CUDA OOM, else ``{}``."""
    return {} if spec.adaptation is None else {"adapted": spec.adaptation.model_dump(mode="json")}


def finish(spec: RunSpec, run_dir: RunDir, body: dict[str, Any], ids: dict[str, Any], started: float) -> dict[str, Any]:
    """Add identity and health to the trainer's result and write result.json (last)."""
    from jobs.health import check_health

    warnings = list(body.get("warnings", [])) + check_health(spec, run_dir, body)
    result = {
        **body,
        "run_id": spec.run_id,
        "run_name": spec.run_name,
        "config_hash": spec.config_hash,
        "warnings": warnings,
        "healthy": not warnings,
        "finished_at": time.time(),
        "wall_time_s": time.time() - started,
        "job_id": ids.get("job_id"),
        "node": socket.gethostname(),
        "git_commit": envinfo.git_commit()[0],
        "adapted": _adapted(spec).get("adapted"),
    }
    run_dir.write_result(result)
    append_jsonl(run_dir.attempts_path, {"event": "finish", "time": time.time(), **ids})
    return result


def _requeue(run_dir: RunDir, ids: dict[str, Any]) -> None:
    """Saved at a step boundary: hand over to submitit to requeue (it exits the process)."""
    run_dir.write_heartbeat("checkpointing", **ids)
    log.warning("requeueing run after a time-limit/preemption signal")
    try:
        preemption.requeue()
    except preemption.Preempted:
        raise
    except Exception as exc:  # submitit refuses: too many timeouts, or not requeueable
        reason = "timeout" if "timed-out" in str(exc) else "preempted"
        raise _Stopped(reason, str(exc)) from exc


TERM_WAIT_S = 900.0  # after a SIGTERM save: longer than any usual GraceTime or KillWait


def _await_scheduler(run_dir: RunDir, ids: dict[str, Any]) -> None:
    """Saved at a step boundary after SIGTERM. Under SLURM, stay alive until SLURM ends the job:
    a preempted job is requeued only if it is still running when its grace time ends (the requeued
    job resumes from the save), and a cancelled one is killed. Elsewhere, stop now."""
    beat = run_dir.read_heartbeat()
    step = None if beat is None else beat.step
    if not preemption.under_slurm():
        raise _Stopped("cancelled", f"terminated (SIGTERM); saved a checkpoint at step {step}")
    append_jsonl(run_dir.attempts_path, {"event": "terminated", "time": time.time(), "step": step, **ids})
    log.warning("saved at step %s after SIGTERM; waiting for SLURM to requeue (preemption) or end the job", step)
    kept = {key: getattr(beat, key, None) for key in ("step", "total_steps", "pid", "hostname")}
    deadline = time.monotonic() + TERM_WAIT_S
    while time.monotonic() < deadline:
        run_dir.write_heartbeat("waiting", **kept, **ids)  # alive, not stalled
        time.sleep(10.0)
    raise _Stopped("preempted", f"SIGTERM, saved at step {step}, but SLURM did not end the job within "
                   f"{TERM_WAIT_S:.0f} s")


class _Stopped(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _write_failure(run_dir: RunDir, exc: BaseException, ids: dict[str, Any],
                   reserve: SpaceReserve | None = None) -> None:
    free = free_bytes(run_dir.path)  # before the reserve is released: how full the disk was when the run failed
    (reserve or SpaceReserve(run_dir.path / SPACE_RESERVE_FILE)).release()
    if isinstance(exc, KeyboardInterrupt):
        reason, hint = "cancelled", "cancelled by the user (orchestrate cancel, scancel or Ctrl-C)"
    elif isinstance(exc, (_Stopped, preemption.Preempted)):
        reason = getattr(exc, "reason", "preempted")
        hint = "raise resources.time_min or resources.max_requeues; resubmit with --retry-failed to resume"
    else:
        reason, hint = classify_exception(exc, free)
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
    heartbeat = run_dir.read_heartbeat()
    during = None if heartbeat is None else heartbeat.state  # e.g. an OOM in evaluation
    run_dir.write_failure(reason, f"{type(exc).__name__}: {exc}"[:2000], hint=hint, traceback_tail=tail,
                          during=during, **ids)
    run_dir.write_heartbeat("failed", **ids)


try:  # submitit is present wherever jobs are submitted; a bare rerun does not need it
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover
    Checkpointable = object  # type: ignore[assignment,misc]
    DelayedSubmission = None  # type: ignore[assignment,misc]


class Worker(Checkpointable):  # type: ignore[misc,valid-type]
    """submitit's callable: on a timeout/preemption warning it saves and is requeued with the
    same run directory; the trainer resumes from the latest checkpoint there."""

    def __call__(self, run_dir_path: str) -> dict[str, Any]:
        return run(run_dir_path)

    def checkpoint(self, run_dir_path: str) -> Any:
        run_dir = RunDir(Path(run_dir_path))
        try:
            run_dir.write_heartbeat("checkpointing", **job_ids())
        except OSError:
            pass
        return DelayedSubmission(self, run_dir_path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m jobs.entrypoint RUN_DIR", file=sys.stderr)
        return 2
    if not (Path(args[0]) / SPEC_FILE).is_file():
        print(f"error: {args[0]} has no {SPEC_FILE}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        run(args[0])
    except WorkerFailed as exc:
        print(f"error: {exc} (see {Path(args[0]) / FAILURE_FILE})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
