"""Time limits and preemption: save at a step boundary, then let submitit requeue the job.

SLURM sends USR2 ``signal_delay_s`` before the time limit (``--signal``, through srun to the
job step) and on preemption. submitit's own handler checkpoints and requeues at once, in the
middle of whatever the trainer is doing; a checkpoint taken mid-step can hold half-updated
weights. So the worker takes the signal over: the handler only sets a flag, the trainer's
callback sees it at the end of the current step, saves a complete Trainer checkpoint and
stops; then the worker calls submitit's handler, which requeues the job (the Worker's
``checkpoint`` resubmits the same run directory) and exits. The requeued job resumes from
that checkpoint. A signal during evaluation stops it at the next prediction step: the
requeued job finds training finished in its last checkpoint and evaluates again.

SIGTERM is the other warning. Most clusters preempt with SIGTERM alone (submitit's USR2 comes on
preemption only where ``preempt_send_user_signal`` is set), ``GraceTime`` seconds before SIGKILL,
and SLURM requeues the job itself; scancel and ``scontrol requeue`` also send SIGTERM, ``KillWait``
seconds before SIGKILL. submitit ignores SIGTERM, losing everything since the last periodic save.
The worker saves at the step boundary as for USR2, but does not requeue (a cancelled job must stay
cancelled): it waits for SLURM to end the job. A job that exits inside its grace time counts as
finished and is not requeued (checked on SLURM 22.05).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_ORIGINAL: dict[str, Any] = {"handler": None}
_SIGNALS: list[str] = []  # names of the warning signals received, in order


class Preempted(Exception):
    """Training stopped at a step boundary because of a time-limit/preemption signal."""


def requested() -> bool:
    return bool(_SIGNALS)


def requeue_requested() -> bool:
    """The warning asks the worker to requeue itself (USR2: time limit, or preemption with a user
    signal); False when SIGTERM alone came, where SLURM decides what happens next."""
    return "SIGUSR2" in _SIGNALS


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    then = "then requeueing" if signum == signal.SIGUSR2 else "then waiting for SLURM (preemption, requeue or cancel)"
    log.warning("received %s: saving at the end of this step, %s", name, then)
    _SIGNALS.append(name)


def install() -> None:
    """Take over USR2 (keeping submitit's handler to requeue with later) and SIGTERM."""
    _SIGNALS.clear()
    previous = signal.getsignal(signal.SIGUSR2)
    if previous is not _on_signal:
        _ORIGINAL["handler"] = previous
    signal.signal(signal.SIGUSR2, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def under_slurm() -> bool:
    """SLURM owns this process: it runs in a SLURM job, not in the local queue started from inside one
    (``orchestrate submit`` with ``cluster: local`` in an ``srun --pty`` shell inherits the allocation's
    ``SLURM_*`` variables; submitit's local executor marks its jobs with ``SUBMITIT_EXECUTOR=local``)."""
    return bool(os.environ.get("SLURM_JOB_ID")) and os.environ.get("SUBMITIT_EXECUTOR") != "local"


class ChildSignals:
    """``worker_init_fn`` for data-loading processes: the scheduler's warnings are the main process's.

    SLURM delivers a preemption's SIGTERM, ``scancel``'s and ``scontrol requeue``'s SIGTERM and the
    ``--signal`` USR2 to every process of the job step. A DataLoader worker dies of SIGTERM (torch's
    worker handler re-raises it) or of USR2 (default action), and the main process then fails with
    "DataLoader worker ... is killed by signal" before it can save. The workers ignore both; they
    still end with the main process (torch's workers watch their parent) and with SIGKILL.
    Picklable, so it also works with the spawn and forkserver start methods. Since they ignore SIGTERM,
    the main process ends any still alive with SIGKILL at exit (:func:`_kill_loader_workers`).
    """

    def __init__(self, inner: Callable[[int], Any] | None = None) -> None:
        self.inner = inner
        _register_exit_hook()  # built in the main process: its workers must not outlive it

    def __call__(self, worker_id: int) -> None:
        for signum in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_IGN)
        if self.inner is not None:
            self.inner(worker_id)


def _kill_loader_workers() -> None:
    """At exit, end the data-loading workers still alive with SIGKILL. They ignore SIGTERM, so the
    SIGTERM that multiprocessing's own exit handler sends its daemonic children would leave it
    joining them forever (seen: a run stopped by a signal never exited)."""
    import multiprocessing

    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


def end_loader_workers() -> int:
    """Shut down the worker processes of every live data-loading iterator whose workers are shielded
    (:class:`ChildSignals`); returns how many iterators were shut down. Called when a run's training and
    evaluation are over, so the workers end with the run, not with the process.

    Why: persistent workers live as long as their iterator. The Trainer's loaders sit in reference
    cycles, so an iterator is freed by the cyclic garbage collector, which finalises its queues before
    the iterator itself: the exit message the iterator then sends never reaches the workers, and
    torch's fallback, SIGTERM, is what shielded workers ignore. They stayed alive, idle, until the
    process exited (seen: pairs of them for the rest of a pytest session that trained in-process).
    Shutting the iterators down while their queues are intact lets the workers exit normally (and
    unregisters them from torch's SIGCHLD check, which a SIGKILL here would trip)."""
    import gc

    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    # type(), not isinstance(): isinstance reads a weak proxy's __class__ through the proxy, and a dead
    # one raises ReferenceError (seen on an H200: compiled runs leave dead proxies in the heap)
    iterators = [obj for obj in gc.get_objects()
                 if issubclass(type(obj), _MultiProcessingDataLoaderIter) and not obj._shutdown
                 and isinstance(getattr(obj, "_worker_init_fn", None), ChildSignals)]
    for iterator in iterators:
        try:
            iterator._shutdown_workers()
        except Exception as exc:  # noqa: BLE001 - torch's internal: the run's result must not depend on it
            log.warning("could not shut down a data loader's worker processes (%s): they end with the process", exc)
    return len(iterators)


_EXIT_HOOK: list[bool] = []


def shield_loader(loader: Any) -> Any:
    """Make ``loader``'s worker processes (if any) ignore the scheduler's warning signals; returns it.
    accelerate's prepared loaders wrap the torch DataLoader that starts the workers (``base_dataloader``)."""
    target = loader.__dict__.get("base_dataloader", loader)
    if getattr(target, "num_workers", 0) > 0 and not isinstance(getattr(target, "worker_init_fn", None), ChildSignals):
        target.worker_init_fn = ChildSignals(target.worker_init_fn)
    return loader


def _register_exit_hook() -> None:
    """Register :func:`_kill_loader_workers` once, after multiprocessing's own exit handler (imported
    with torch's data loader), so it runs before it. Every :class:`ChildSignals` registers it, not only
    the loaders that :func:`shield_loader` wraps: a bucketed training loader is built with one directly,
    and a process whose only loader was that one never exited (seen: the trainer benchmark on an H200,
    multiprocessing joining workers that ignored its SIGTERM)."""
    if _EXIT_HOOK:
        return
    import atexit
    import multiprocessing.util  # noqa: F401 - its exit handler is registered at import: before ours

    atexit.register(_kill_loader_workers)
    _EXIT_HOOK.append(True)


def start_compile_workers() -> None:
    """Start torch.compile's (inductor's) compile-worker processes with SIGTERM and USR2 blocked, so they
    never see the scheduler's warnings: a compile worker killed by the job-wide SIGTERM mid-compilation
    fails the step before the save. A blocked signal mask is inherited across fork and exec (a handler is
    not), by the pool's sidecar process and the workers it forks; this process's mask is restored at once,
    and a signal that came meanwhile is delivered then. No-op where inductor compiles in-process."""
    try:
        from torch._inductor.async_compile import AsyncCompile
    except ImportError:
        return
    warnings_mask = {signal.SIGTERM, signal.SIGUSR2}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, warnings_mask)
    try:
        AsyncCompile.warm_pool()
    except Exception as exc:  # noqa: BLE001 - an internal API: without the pool inductor compiles in-process
        log.warning("could not start the compile workers with the warning signals blocked: %s", exc)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def requeue() -> None:
    """Hand over to submitit: it calls Worker.checkpoint, requeues the job and exits."""
    handler: Callable[[int, FrameType | None], Any] | None = _ORIGINAL["handler"]
    if callable(handler):
        handler(signal.SIGUSR2, None)
    raise Preempted("stopped for a time limit or preemption; no scheduler to requeue with")


def make_callback() -> Any:
    """A TrainerCallback that turns the flag into save-and-stop at a step boundary."""
    from transformers import TrainerCallback

    class PreemptionCallback(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if requested():
                control.should_save = True
                control.should_training_stop = True

        def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if requested():
                raise Preempted("time limit or preemption during evaluation")

    return PreemptionCallback()
